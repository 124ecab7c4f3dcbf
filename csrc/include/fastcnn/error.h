// Errors raised by the kernels' entry points. The bindings turn ValueError into Python's
// ValueError and TypeError into Python's TypeError; messages name the argument, what was
// expected and what came.
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>

namespace fastcnn {

struct ValueError : std::invalid_argument {
  using std::invalid_argument::invalid_argument;
};
struct TypeError : std::invalid_argument {
  using std::invalid_argument::invalid_argument;
};

namespace detail {
template <typename... Args>
std::string concat(const Args&... args) {
  std::ostringstream out;
  (out << ... << args);
  return out.str();
}
}  // namespace detail

}  // namespace fastcnn

#define FASTCNN_CHECK(cond, ...)                                                      \
  do {                                                                                \
    if (!(cond)) throw ::fastcnn::ValueError(::fastcnn::detail::concat(__VA_ARGS__)); \
  } while (0)

#define FASTCNN_CHECK_TYPE(cond, ...)                                                \
  do {                                                                               \
    if (!(cond)) throw ::fastcnn::TypeError(::fastcnn::detail::concat(__VA_ARGS__)); \
  } while (0)
