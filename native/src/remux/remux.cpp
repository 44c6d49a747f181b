#include "remux/remux.h"
#include "common/error.h"
namespace cdlc {
PipelineResult package_copy(const std::string& input, const std::string&, double) {
    throw Error("package_copy not implemented: " + input);
}
}
