// The only pybind11 file. Thin: converts types, releases the GIL around
// all media work and maps core errors to Python exceptions.
#include <pybind11/functional.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <memory>
#include <mutex>
#include <string>

#include "cmaf/segmenter.h"
#include "codec/nal.h"
#include "common/error.h"
#include "common/media_types.h"
#include "probe/probe.h"
#include "remux/remux.h"
#include "text/subtitle_parse.h"
#include "transcode/encoders.h"
#include "transcode/transcoder.h"

namespace py = pybind11;
using namespace cdlc;

namespace {

std::vector<uint8_t> bytes_to_vector(const py::bytes& b);

py::bytes to_bytes(const std::vector<uint8_t>& v) {
    return py::bytes(reinterpret_cast<const char*>(v.data()), v.size());
}

// Python classes that inherit both our base and the matching builtin, like PyAV's.
struct ErrorClasses {
    py::object base, invalid, not_found, io, cancelled;
};
ErrorClasses* g_errors = nullptr;

py::object make_error_class(py::module_& m, const char* name, py::tuple bases) {
    py::object type = py::module_::import("builtins").attr("type");
    py::dict ns;
    ns["__module__"] = m.attr("__name__");
    py::object cls = type(name, bases, ns);
    m.attr(name) = cls;
    return cls;
}

void raise_as(const py::object& cls, const Error& e) {
    py::object exc = cls(py::str(e.what()));
    exc.attr("code") = e.code();
    PyErr_SetObject(cls.ptr(), exc.ptr());
}

void init_errors(py::module_& m) {
    g_errors = new ErrorClasses();
    py::object builtins = py::module_::import("builtins");
    g_errors->base = make_error_class(m, "NativeError", py::make_tuple(builtins.attr("Exception")));
    g_errors->invalid = make_error_class(
        m, "InvalidDataError", py::make_tuple(g_errors->base, builtins.attr("ValueError")));
    g_errors->not_found = make_error_class(
        m, "NotFoundError", py::make_tuple(g_errors->base, builtins.attr("LookupError")));
    g_errors->io = make_error_class(
        m, "NativeIOError", py::make_tuple(g_errors->base, builtins.attr("OSError")));
    g_errors->cancelled = make_error_class(m, "CancelledError", py::make_tuple(g_errors->base));
    py::register_exception_translator([](std::exception_ptr p) {
        try {
            if (p) std::rethrow_exception(p);
        } catch (const InvalidDataError& e) {
            raise_as(g_errors->invalid, e);
        } catch (const NotFoundError& e) {
            raise_as(g_errors->not_found, e);
        } catch (const IOError& e) {
            raise_as(g_errors->io, e);
        } catch (const CancelledError& e) {
            raise_as(g_errors->cancelled, e);
        } catch (const Error& e) {
            raise_as(g_errors->base, e);
        }
    });
}

void init_models(py::module_& m) {
    py::enum_<TrackKind>(m, "TrackKind")
        .value("VIDEO", TrackKind::Video)
        .value("AUDIO", TrackKind::Audio)
        .value("TEXT", TrackKind::Text);

    py::class_<TrackInfo>(m, "TrackInfo")
        .def_readonly("kind", &TrackInfo::kind)
        .def_readonly("codec", &TrackInfo::codec)
        .def_readonly("timescale", &TrackInfo::timescale)
        .def_property_readonly("extradata", [](const TrackInfo& t) { return to_bytes(t.extradata); })
        .def_readonly("width", &TrackInfo::width)
        .def_readonly("height", &TrackInfo::height)
        .def_readonly("sar_num", &TrackInfo::sar_num)
        .def_readonly("sar_den", &TrackInfo::sar_den)
        .def_readonly("rotation", &TrackInfo::rotation)
        .def_readonly("frame_rate_num", &TrackInfo::frame_rate_num)
        .def_readonly("frame_rate_den", &TrackInfo::frame_rate_den)
        .def_readonly("sample_rate", &TrackInfo::sample_rate)
        .def_readonly("channels", &TrackInfo::channels)
        .def_readonly("bitrate", &TrackInfo::bitrate)
        .def_readonly("language", &TrackInfo::language)
        .def_readonly("name", &TrackInfo::name)
        .def_readonly("presentation_offset", &TrackInfo::presentation_offset)
        .def_readonly("forced", &TrackInfo::forced)
        .def_readonly("sdh", &TrackInfo::sdh);

    py::class_<SkippedStream>(m, "SkippedStream")
        .def_readonly("source", &SkippedStream::source)
        .def_readonly("index", &SkippedStream::index)
        .def_readonly("kind", &SkippedStream::kind)
        .def_readonly("codec", &SkippedStream::codec)
        .def_readonly("reason", &SkippedStream::reason);

    py::class_<SidecarAudio>(m, "SidecarAudio")
        .def(py::init<>())
        .def_readwrite("path", &SidecarAudio::path)
        .def_readwrite("language", &SidecarAudio::language)
        .def_readwrite("name", &SidecarAudio::name);

    py::class_<SidecarText>(m, "SidecarText")
        .def(py::init<>())
        .def_readwrite("path", &SidecarText::path)
        .def_readwrite("language", &SidecarText::language)
        .def_readwrite("name", &SidecarText::name)
        .def_readwrite("forced", &SidecarText::forced)
        .def_readwrite("sdh", &SidecarText::sdh);

    py::class_<EncryptionConfig>(m, "EncryptionConfig")
        .def(py::init<>())
        .def_readwrite("scheme", &EncryptionConfig::scheme)
        .def_property(
            "kid", [](const EncryptionConfig& c) { return to_bytes(c.kid); },
            [](EncryptionConfig& c, const py::bytes& b) { c.kid = bytes_to_vector(b); })
        .def_property(
            "key", [](const EncryptionConfig& c) { return to_bytes(c.key); },
            [](EncryptionConfig& c, const py::bytes& b) { c.key = bytes_to_vector(b); })
        .def_property(
            "iv", [](const EncryptionConfig& c) { return to_bytes(c.iv); },
            [](EncryptionConfig& c, const py::bytes& b) { c.iv = bytes_to_vector(b); });

    py::class_<Cue>(m, "Cue")
        .def_readonly("start_ms", &Cue::start_ms)
        .def_readonly("end_ms", &Cue::end_ms)
        .def_readonly("text", &Cue::text)
        .def_readonly("settings", &Cue::settings);

    py::class_<SegmentRecord>(m, "SegmentRecord")
        .def_readonly("number", &SegmentRecord::number)
        .def_readonly("start", &SegmentRecord::start)
        .def_readonly("duration", &SegmentRecord::duration)
        .def_readonly("size", &SegmentRecord::size)
        .def_readonly("iframe_size", &SegmentRecord::iframe_size);

    py::class_<RenditionResult>(m, "RenditionResult")
        .def_readonly("id", &RenditionResult::id)
        .def_readonly("track", &RenditionResult::track)
        .def_readonly("segments", &RenditionResult::segments)
        .def_readonly("scaled_from", &RenditionResult::scaled_from);

    py::class_<Picture>(m, "Picture")
        .def_readonly("time", &Picture::time)
        .def_readonly("width", &Picture::width)
        .def_readonly("height", &Picture::height)
        .def_readonly("score", &Picture::score)
        .def_property_readonly("rgb", [](const Picture& p) { return to_bytes(p.rgb); });

    py::class_<PipelineResult>(m, "PipelineResult")
        .def_readonly("renditions", &PipelineResult::renditions)
        .def_readonly("skipped", &PipelineResult::skipped)
        .def_readonly("duration_seconds", &PipelineResult::duration_seconds)
        .def_readonly("source_frames", &PipelineResult::source_frames)
        .def_readonly("thumbnails", &PipelineResult::thumbnails)
        .def_readonly("poster", &PipelineResult::poster);
}

void init_probe(py::module_& m) {
    py::class_<StreamInfo>(m, "StreamInfo")
        .def_readonly("index", &StreamInfo::index)
        .def_readonly("kind", &StreamInfo::kind)
        .def_readonly("codec", &StreamInfo::codec)
        .def_readonly("profile", &StreamInfo::profile)
        .def_readonly("width", &StreamInfo::width)
        .def_readonly("height", &StreamInfo::height)
        .def_readonly("display_width", &StreamInfo::display_width)
        .def_readonly("display_height", &StreamInfo::display_height)
        .def_readonly("sar_num", &StreamInfo::sar_num)
        .def_readonly("sar_den", &StreamInfo::sar_den)
        .def_readonly("frame_rate", &StreamInfo::frame_rate)
        .def_readonly("variable_frame_rate", &StreamInfo::variable_frame_rate)
        .def_readonly("interlaced", &StreamInfo::interlaced)
        .def_readonly("rotation", &StreamInfo::rotation)
        .def_readonly("pix_fmt", &StreamInfo::pix_fmt)
        .def_readonly("bit_depth", &StreamInfo::bit_depth)
        .def_readonly("sample_rate", &StreamInfo::sample_rate)
        .def_readonly("channels", &StreamInfo::channels)
        .def_readonly("channel_layout", &StreamInfo::channel_layout)
        .def_readonly("bit_rate", &StreamInfo::bit_rate)
        .def_readonly("duration", &StreamInfo::duration);

    py::class_<MediaInfo>(m, "MediaInfo")
        .def_readonly("path", &MediaInfo::path)
        .def_readonly("format", &MediaInfo::format)
        .def_readonly("duration", &MediaInfo::duration)
        .def_readonly("size", &MediaInfo::size)
        .def_readonly("bit_rate", &MediaInfo::bit_rate)
        .def_readonly("streams", &MediaInfo::streams);

    m.def(
        "probe",
        [](const std::string& path) {
            py::gil_scoped_release release;
            return probe(path);
        },
        py::arg("path"));
}

void init_transcode(py::module_& m) {
    py::class_<RungConfig>(m, "RungConfig")
        .def(py::init<>())
        .def_readwrite("id", &RungConfig::id)
        .def_readwrite("width", &RungConfig::width)
        .def_readwrite("height", &RungConfig::height)
        .def_readwrite("bitrate", &RungConfig::bitrate)
        .def_readwrite("maxrate", &RungConfig::maxrate)
        .def_readwrite("bufsize", &RungConfig::bufsize)
        .def_readwrite("crf", &RungConfig::crf)
        .def_readwrite("encoder", &RungConfig::encoder);

    py::class_<TranscodeConfig>(m, "TranscodeConfig")
        .def(py::init<>())
        .def_readwrite("input", &TranscodeConfig::input)
        .def_readwrite("output_dir", &TranscodeConfig::output_dir)
        .def_readwrite("rungs", &TranscodeConfig::rungs)
        .def_readwrite("segment_seconds", &TranscodeConfig::segment_seconds)
        .def_readwrite("gop_seconds", &TranscodeConfig::gop_seconds)
        .def_readwrite("preset", &TranscodeConfig::preset)
        .def_readwrite("fps_num", &TranscodeConfig::fps_num)
        .def_readwrite("fps_den", &TranscodeConfig::fps_den)
        .def_readwrite("audio", &TranscodeConfig::audio)
        .def_readwrite("audio_bitrate", &TranscodeConfig::audio_bitrate)
        .def_readwrite("audio_sample_rate", &TranscodeConfig::audio_sample_rate)
        .def_readwrite("audio_channels", &TranscodeConfig::audio_channels)
        .def_readwrite("audio_id", &TranscodeConfig::audio_id)
        .def_readwrite("encoder_threads", &TranscodeConfig::encoder_threads)
        .def_readwrite("span_start", &TranscodeConfig::span_start)
        .def_readwrite("span_end", &TranscodeConfig::span_end)
        .def_readwrite("remote_timeout", &TranscodeConfig::remote_timeout)
        .def_readwrite("video", &TranscodeConfig::video)
        .def_readwrite("sidecar_audio", &TranscodeConfig::sidecar_audio)
        .def_readwrite("subtitles", &TranscodeConfig::subtitles)
        .def_readwrite("sidecar_text", &TranscodeConfig::sidecar_text)
        .def_readwrite("encryption", &TranscodeConfig::encryption)
        .def_readwrite("thumbnail_interval", &TranscodeConfig::thumbnail_interval)
        .def_readwrite("thumbnail_long", &TranscodeConfig::thumbnail_long)
        .def_readwrite("poster_long", &TranscodeConfig::poster_long);

    py::class_<Transcoder>(m, "Transcoder")
        .def(py::init<TranscodeConfig>(), py::arg("config"))
        .def(
            "run",
            [](Transcoder& self, py::object progress) {
                // A Python exception raised in the callback is kept, the run is
                // cancelled, and the exception re-raised here.
                std::shared_ptr<py::error_already_set> pending;
                std::mutex pending_mutex;
                ProgressFn fn;
                if (!progress.is_none()) {
                    fn = [&](double fraction) {
                        py::gil_scoped_acquire acquire;
                        try {
                            progress(fraction);
                        } catch (py::error_already_set& e) {
                            std::lock_guard<std::mutex> lock(pending_mutex);
                            if (!pending) pending = std::make_shared<py::error_already_set>(std::move(e));
                            self.cancel();
                        }
                    };
                }
                PipelineResult result;
                try {
                    py::gil_scoped_release release;
                    result = self.run(fn);
                } catch (const CancelledError&) {
                    if (pending) throw *pending;
                    throw;
                }
                if (pending) throw *pending;
                return result;
            },
            py::arg("progress") = py::none())
        .def("cancel", &Transcoder::cancel, py::call_guard<py::gil_scoped_release>());

    // Run-time encoder detection (GPU workers): opening an encoder can take a while
    // (CUDA initialisation), so the GIL is released; answers are cached per process.
    m.def("encoder_usable", &encoder_usable, py::arg("name"),
          py::call_guard<py::gil_scoped_release>());
    m.def("h264_encoders_available", &h264_encoders_available,
          py::call_guard<py::gil_scoped_release>());
}

std::vector<uint8_t> bytes_to_vector(const py::bytes& b) {
    char* data = nullptr;
    Py_ssize_t size = 0;
    if (PyBytes_AsStringAndSize(b.ptr(), &data, &size) != 0) throw py::error_already_set();
    return std::vector<uint8_t>(reinterpret_cast<uint8_t*>(data), reinterpret_cast<uint8_t*>(data) + size);
}

// A segmenter usable from Python (tests, tools): packets are copied out of the
// Python bytes object with the GIL held, then written with it released.
class PySegmenter {
public:
    PySegmenter(TrackInfo track, std::string out_dir, double segment_seconds)
        : seg_(std::move(track), std::move(out_dir), segment_seconds) {}
    void write(const py::bytes& data, int64_t pts, int64_t dts, int64_t duration, bool keyframe) {
        EncodedPacket p;
        p.data = bytes_to_vector(data);
        p.pts = pts;
        p.dts = dts;
        p.duration = duration;
        p.keyframe = keyframe;
        py::gil_scoped_release release;
        std::lock_guard<std::mutex> lock(mutex_);
        seg_.write(std::move(p));
    }
    std::vector<SegmentRecord> finish() {
        py::gil_scoped_release release;
        std::lock_guard<std::mutex> lock(mutex_);
        seg_.finish();
        return seg_.segments();
    }
    void force_cut() {
        std::lock_guard<std::mutex> lock(mutex_);
        seg_.force_cut();
    }
    std::vector<SegmentRecord> segments() {
        std::lock_guard<std::mutex> lock(mutex_);
        return seg_.segments();
    }
    TrackInfo track() {
        std::lock_guard<std::mutex> lock(mutex_);
        return seg_.track();
    }

private:
    // The GIL is released while writing, so two Python threads could otherwise
    // reach the (single-threaded) segmenter at once.
    std::mutex mutex_;
    CmafSegmenter seg_;
};

void init_cmaf(py::module_& m) {
    m.def(
        "package_copy",
        [](const std::string& input, const std::string& output_dir, double segment_seconds,
           std::vector<SidecarAudio> sidecar_audio, std::vector<SidecarText> sidecar_text, bool subtitles,
           EncryptionConfig encryption) {
            CopyOptions options;
            options.encryption = std::move(encryption);
            options.sidecar_audio = std::move(sidecar_audio);
            options.sidecar_text = std::move(sidecar_text);
            options.subtitles = subtitles;
            py::gil_scoped_release release;
            return package_copy(input, output_dir, segment_seconds, options);
        },
        py::arg("input"), py::arg("output_dir"), py::arg("segment_seconds"),
        py::arg("sidecar_audio") = std::vector<SidecarAudio>{}, py::arg("sidecar_text") = std::vector<SidecarText>{},
        py::arg("subtitles") = true, py::arg("encryption") = EncryptionConfig{});

    // Subtitle readers (fuzz targets and tests): format "webvtt" or "srt".
    m.def(
        "parse_subtitles",
        [](const py::bytes& data, const std::string& format, const std::string& name) {
            const std::string text = data;
            py::gil_scoped_release release;
            if (format == "webvtt") return parse_webvtt(text, name);
            if (format == "srt") return parse_srt(text, name);
            throw InvalidDataError("unknown subtitle format '" + format + "' (webvtt, srt)");
        },
        py::arg("data"), py::arg("format"), py::arg("name") = "<data>");

    py::class_<PySegmenter>(m, "Segmenter")
        .def(py::init([](TrackKind kind, const std::string& codec, uint32_t timescale,
                         const py::bytes& extradata, int width, int height, int sample_rate,
                         int channels, const std::string& out_dir, double segment_seconds,
                         int sar_num, int sar_den, int frame_rate_num, int frame_rate_den,
                         int64_t bitrate, const std::string& language) {
                 TrackInfo t;
                 t.kind = kind;
                 t.codec = codec;
                 t.timescale = timescale;
                 t.extradata = bytes_to_vector(extradata);
                 t.width = width;
                 t.height = height;
                 t.sample_rate = sample_rate;
                 t.channels = channels;
                 t.sar_num = sar_num;
                 t.sar_den = sar_den;
                 t.frame_rate_num = frame_rate_num;
                 t.frame_rate_den = frame_rate_den;
                 t.bitrate = bitrate;
                 t.language = language;
                 return new PySegmenter(std::move(t), out_dir, segment_seconds);
             }),
             py::arg("track_kind"), py::arg("codec"), py::arg("timescale"), py::arg("extradata"),
             py::arg("width"), py::arg("height"), py::arg("sample_rate"), py::arg("channels"),
             py::arg("out_dir"), py::arg("segment_seconds"), py::arg("sar_num") = 1,
             py::arg("sar_den") = 1, py::arg("frame_rate_num") = 0, py::arg("frame_rate_den") = 1,
             py::arg("bitrate") = 0, py::arg("language") = "und")
        .def("write", &PySegmenter::write, py::arg("data"), py::arg("pts"), py::arg("dts"),
             py::arg("duration"), py::arg("keyframe"))
        .def("force_cut", &PySegmenter::force_cut)
        .def("finish", &PySegmenter::finish)
        .def_property_readonly("segments", &PySegmenter::segments)
        .def_property_readonly("track", &PySegmenter::track);

    m.def(
        "avc_decoder_config",
        [](const py::bytes& b) {
            const std::vector<uint8_t> v = bytes_to_vector(b);
            return to_bytes(avc_decoder_config(v.data(), v.size()));
        },
        py::arg("extradata"));
    m.def(
        "hevc_decoder_config",
        [](const py::bytes& b) {
            const std::vector<uint8_t> v = bytes_to_vector(b);
            return to_bytes(hevc_decoder_config(v.data(), v.size()));
        },
        py::arg("extradata"));
    m.def(
        "annexb_to_length_prefixed",
        [](const py::bytes& b) {
            const std::vector<uint8_t> v = bytes_to_vector(b);
            return to_bytes(annexb_to_length_prefixed(v.data(), v.size()));
        },
        py::arg("data"));
}

}  // namespace

PYBIND11_MODULE(_core, m) {
    m.doc() = "cdlc-stream native core (FFmpeg libav* + CMAF writer)";
    m.def("set_log_level", &set_library_log_level, py::arg("level"),
          "libav* stderr log level: -8 quiet, 16 error, 24 warning, 32 info");
    init_errors(m);
    init_models(m);
    init_probe(m);
    init_transcode(m);
    init_cmaf(m);
}
