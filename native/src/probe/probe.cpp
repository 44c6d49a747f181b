#include "probe/probe.h"
#include "common/error.h"
namespace cdlc {
MediaInfo probe(const std::string& path) { throw Error("probe not implemented: " + path); }
}
