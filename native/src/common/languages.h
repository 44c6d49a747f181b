// Language tags of streams: the ISO 639-2/T code ISO-BMFF carries (mdhd §8.4.2.3)
// and the English name manifests show when a stream has no title.
#pragma once

#include <string>

namespace cdlc {

// "fre", "fra", "fr", "FR", "fr-CA" -> "fra"; anything unknown or empty -> "und".
// Unknown but well-formed three-letter codes are kept as they are (lower case).
std::string normalise_language(const std::string& tag);

// "fra" -> "French"; "und" or unknown -> "Unknown" / the code itself.
std::string language_name(const std::string& code);

}  // namespace cdlc
