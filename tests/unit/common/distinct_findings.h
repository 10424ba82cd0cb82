#pragma once
// Test findings in which every field of the schema tables (finding_fields.h) holds a value that
// no other field and no default holds, so that a field written under another field's name, read
// into another member or not read at all changes the result. Shared by the common and wire
// tests.

#include <cstdint>
#include <string>
#include <type_traits>

#include "stallwatch/common/finding_fields.h"

namespace stallwatch::testing {

// Fills every field of `table` in *f. Field i (from 1) gets "v<i>", 1000 + i, 0.01·i + 0.001 (a
// valid ratio and duration), StallClass::kStarved or the histogram {{i, 1000 + i}}. Booleans can
// hold only two values: the k-th gets (k + bool_phase) % 2 == 0, so that with phases 0 and 1 each
// is non-default once and no two consecutive ones are equal.
template <typename Table, typename Struct>
void FillDistinct(const Table& table, Struct* f, int bool_phase = 0) {
  uint32_t i = 0;
  int bools = 0;
  ForEachField(table, [&](const auto& field) {
    ++i;
    using T = typename std::decay_t<decltype(field)>::Type;
    T& v = f->*field.member;
    if constexpr (std::is_same_v<T, std::string>) {
      v = "v" + std::to_string(i);
    } else if constexpr (std::is_same_v<T, bool>) {
      v = (bools++ + bool_phase) % 2 == 0;
    } else if constexpr (std::is_same_v<T, StallClass>) {
      v = StallClass::kStarved;
    } else if constexpr (std::is_same_v<T, SparseHistogram>) {
      v = {{i, uint64_t{1000} + i}};
    } else if constexpr (std::is_integral_v<T>) {
      v = static_cast<T>(1000) + static_cast<T>(i);
    } else {
      static_assert(std::is_same_v<T, double>, "a field type FillDistinct does not know");
      v = 0.01 * i + 0.001;
    }
  });
}

inline DelayFinding DistinctDelay() {
  DelayFinding d;
  FillDistinct(kDelayFields, &d);
  return d;
}

inline StallFinding DistinctStall(int bool_phase = 0) {
  StallFinding s;
  FillDistinct(kStallFields, &s, bool_phase);
  return s;
}

}  // namespace stallwatch::testing
