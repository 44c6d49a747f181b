"""cdlc-stream packager: HLS playlists and DASH MPDs from the segment index, and
RFC 6381 codec strings. Pure Python over metadata.models."""

from packager.bitrates import average_bitrate, peak_bitrate
from packager.codecs import codec_string
from packager.dash import build_mpd
from packager.hls import SDH_CHARACTERISTICS, build_iframes, build_master, build_media
from packager.languages import bcp47

__all__ = [
    "SDH_CHARACTERISTICS",
    "average_bitrate",
    "bcp47",
    "build_iframes",
    "build_master",
    "build_media",
    "build_mpd",
    "codec_string",
    "peak_bitrate",
]
