// Errors raised by the kernels' entry points. The bindings turn ValueError into Python's
// ValueError and TypeError into Python's TypeError; messages name the argument, what was
// expected and what came.
#pragma once

#include <stdexcept>
#include <string>
#include <string_view>
#include <type_traits>

namespace fastcnn {

struct ValueError : std::invalid_argument {
  using std::invalid_argument::invalid_argument;
};
struct TypeError : std::invalid_argument {
  using std::invalid_argument::invalid_argument;
};

namespace detail {
// Messages are built without iostreams: a toolchain that links parts of libstdc++ statically
// (seen with a GCC 13 in /opt/gcc) puts a second, never-initialized copy of the locale
// machinery into the module, and the first number written through an ostringstream crashed.
// std::to_string formats integers without any locale.
template <typename T>
void append(std::string& out, const T& v) {
  if constexpr (std::is_same_v<T, bool>) {
    out += v ? '1' : '0';
  } else if constexpr (std::is_same_v<T, char>) {
    out += v;
  } else if constexpr (std::is_integral_v<T>) {
    out += std::to_string(v);
  } else {
    static_assert(std::is_convertible_v<const T&, std::string_view>,
                  "messages take text, characters and integers");
    out += std::string_view(v);
  }
}

template <typename... Args>
std::string concat(const Args&... args) {
  std::string out;
  (append(out, args), ...);
  return out;
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
