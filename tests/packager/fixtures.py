"""Fixed model objects the golden manifests are built from: a 3-rung H.264 ladder
at 30000/1001 fps with 4.004 s segments (the last one short) and stereo AAC whose
segments start at the first AAC frame at or after each video cut."""

from __future__ import annotations

from metadata.models import Asset, JobState, Rendition, Segment

ASSET = Asset(id="a1b2c3", state=JobState.READY, duration=14.014, source_name="talk.mov")

VIDEO_SIZES = {
    "v1080": [2_612_345, 2_498_001, 2_777_777, 1_234_567],
    "v720": [1_512_345, 1_398_001, 1_677_777, 634_567],
    "v360": [412_345, 398_001, 477_777, 134_567],
}
DIMENSIONS = {"v1080": (1920, 1080), "v720": (1280, 720), "v360": (640, 360)}
CODECS = {"v1080": "avc1.640028", "v720": "avc1.64001F", "v360": "avc1.4D401E"}
# 90 kHz: three segments of 120 frames (4.004 s) and one of 60 frames (2.002 s).
VIDEO_DURATIONS = [360360, 360360, 360360, 180180]


def renditions() -> list[Rendition]:
    out = []
    for rid, (w, h) in DIMENSIONS.items():
        out.append(Rendition(
            asset_id=ASSET.id, id=rid, kind="video", codec="h264", codec_string=CODECS[rid],
            timescale=90000, bitrate={"v1080": 5_000_000, "v720": 3_000_000, "v360": 800_000}[rid],
            width=w, height=h, sar="1:1", frame_rate="30000/1001",
        ))
    out.append(Rendition(
        asset_id=ASSET.id, id="audio", kind="audio", codec="aac", codec_string="mp4a.40.2",
        timescale=48000, bitrate=128_000, sample_rate=48000, channels=2, language="en",
    ))
    return out


def segments() -> dict[str, list[Segment]]:
    out: dict[str, list[Segment]] = {}
    for rid, sizes in VIDEO_SIZES.items():
        segs, start = [], 0
        for n, (size, dur) in enumerate(zip(sizes, VIDEO_DURATIONS, strict=True), start=1):
            segs.append(Segment(ASSET.id, rid, n, start, dur, size, iframe_size=size // 9))
            start += dur
        out[rid] = segs
    # 48 kHz AAC, 1024-sample frames: cuts at the first frame at/after 4.004 s etc.
    audio_durations = [192512, 192512, 192512, 95232]
    audio_sizes = [64_100, 64_050, 64_120, 31_400]
    segs, start = [], 0
    for n, (size, dur) in enumerate(zip(audio_sizes, audio_durations, strict=True), start=1):
        segs.append(Segment(ASSET.id, "audio", n, start, dur, size))
        start += dur
    out["audio"] = segs
    return out


# ---- a catalogue title: two audio languages and subtitles ---------------------------
# English (the master's) and a French dub, both with 1024 samples of AAC priming
# behind the edit list; English subtitles, English SDH, forced French ones (for the
# English scenes with French signs). Text segments are the 4.004 s grid in ms.

SDH = ("public.accessibility.transcribes-spoken-dialog,"
       "public.accessibility.describes-music-and-sound")


def catalogue_renditions() -> list[Rendition]:
    video = [r for r in renditions() if r.kind == "video"][:2]
    audio = [
        Rendition(asset_id=ASSET.id, id="audio", kind="audio", codec="aac",
                  codec_string="mp4a.40.2", timescale=48000, bitrate=128_000, sample_rate=48000,
                  channels=2, language="eng", name="English", presentation_offset=1024),
        Rendition(asset_id=ASSET.id, id="audio_fra", kind="audio", codec="aac",
                  codec_string="mp4a.40.2", timescale=48000, bitrate=128_000, sample_rate=48000,
                  channels=6, language="fra", name="Français", presentation_offset=1024),
    ]
    text = [
        Rendition(asset_id=ASSET.id, id="sub_eng", kind="text", codec="webvtt",
                  codec_string="wvtt", timescale=1000, bitrate=0, language="eng", name="English"),
        Rendition(asset_id=ASSET.id, id="sub_eng_2", kind="text", codec="webvtt",
                  codec_string="wvtt", timescale=1000, bitrate=0, language="eng",
                  name="English (SDH)", characteristics=SDH),
        Rendition(asset_id=ASSET.id, id="sub_fra_forced", kind="text", codec="webvtt",
                  codec_string="wvtt", timescale=1000, bitrate=0, language="fra",
                  name="Français (forcés)", forced=True),
    ]
    return video + audio + text


def catalogue_segments() -> dict[str, list[Segment]]:
    base = segments()
    out = {rid: base[rid] for rid in ("v1080", "v720", "audio")}
    out["audio_fra"] = [Segment(ASSET.id, "audio_fra", s.number, s.start, s.duration,
                                s.size * 3) for s in base["audio"]]
    for rid, sizes in (("sub_eng", [412, 380, 515, 101]), ("sub_eng_2", [612, 580, 715, 201]),
                       ("sub_fra_forced", [60, 60, 110, 60])):
        starts = [0, 4004, 8008, 12012]
        durations = [4004, 4004, 4004, 2002]
        rows = zip(starts, durations, sizes, strict=True)
        out[rid] = [Segment(ASSET.id, rid, n, start, dur, size)
                    for n, (start, dur, size) in enumerate(rows, start=1)]
    return out
