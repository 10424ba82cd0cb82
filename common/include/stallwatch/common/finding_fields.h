#pragma once
// The finding schema as data: one table per finding kind, one entry per field (its JSON name and
// its member; the member's type is the field's type). The JSON encoder and decoder
// (finding_json.cc) and the daemon's delay-window scanner (common/wire/src/codec.cc) are all
// generated from these tables, so a field added to the struct and to its table is encoded,
// decoded and scanned alike. A field added to the struct and not to the table does not compile
// (the static_asserts below count the struct's members).
//
// Not in the tables: "kind" and "schema_version" (the envelope, written by the encoder) and
// StallFinding::stacks, CallsFinding::calls and CallSiteStats::site (nested objects, encoded by
// hand).
//
// Pure constexpr data and templates; thread-safe.

#include <cstddef>
#include <string_view>
#include <tuple>
#include <type_traits>
#include <utility>

#include "stallwatch/findings.h"

namespace stallwatch {

// One field of a finding: Struct::*member is written as JSON key `name`.
template <typename Struct, typename T>
struct FindingField {
  using Type = T;
  std::string_view name;
  T Struct::*member;
};

namespace internal {

template <typename Struct, typename T>
constexpr FindingField<Struct, T> Field(std::string_view name, T Struct::*member) {
  return {name, member};
}

// Converts to any member type; used only unevaluated, to count an aggregate's members.
struct AnyMember {
  template <typename T>
  constexpr operator T&() const&& noexcept;  // NOLINT(google-explicit-constructor)
};

template <typename T, size_t... I>
constexpr bool BraceConstructible(std::index_sequence<I...>) {
  return requires { T{(static_cast<void>(I), AnyMember{})...}; };
}

// Number of members of an aggregate whose members are not themselves aggregates.
template <typename T, size_t N = 0>
constexpr size_t MemberCount() {
  if constexpr (BraceConstructible<T>(std::make_index_sequence<N + 1>())) {
    return MemberCount<T, N + 1>();
  } else {
    return N;
  }
}

}  // namespace internal

// Every field of a delay finding, in the order the decoder checks them (the first bad field is
// the one an error names).
inline constexpr auto kDelayFields = std::make_tuple(
    internal::Field("service", &DelayFinding::service), internal::Field("pid", &DelayFinding::pid),
    internal::Field("loop", &DelayFinding::loop), internal::Field("end_ns", &DelayFinding::end_ns),
    internal::Field("window_s", &DelayFinding::window_s),
    internal::Field("count", &DelayFinding::count), internal::Field("p50_s", &DelayFinding::p50_s),
    internal::Field("p90_s", &DelayFinding::p90_s), internal::Field("p99_s", &DelayFinding::p99_s),
    internal::Field("p999_s", &DelayFinding::p999_s),
    internal::Field("max_s", &DelayFinding::max_s), internal::Field("sum_s", &DelayFinding::sum_s),
    internal::Field("utilization", &DelayFinding::utilization),
    internal::Field("utilization_estimated", &DelayFinding::utilization_estimated),
    internal::Field("boundary_source", &DelayFinding::boundary_source),
    internal::Field("loop_kind", &DelayFinding::loop_kind),
    internal::Field("runtime", &DelayFinding::runtime),
    internal::Field("iterations", &DelayFinding::iterations),
    internal::Field("iteration_sum_s", &DelayFinding::iteration_sum_s),
    internal::Field("stalls_total", &DelayFinding::stalls_total),
    internal::Field("stack_samples_total", &DelayFinding::stack_samples_total),
    internal::Field("reports_suppressed_total", &DelayFinding::reports_suppressed_total),
    internal::Field("findings_dropped_total", &DelayFinding::findings_dropped_total),
    // Written only with JsonOptions::include_buckets (the daemon stream).
    internal::Field("delay_buckets", &DelayFinding::delay_buckets),
    internal::Field("iteration_buckets", &DelayFinding::iteration_buckets));

// The fields of a stall finding other than `stacks`, in the order the decoder checks them.
inline constexpr auto kStallFields = std::make_tuple(
    internal::Field("service", &StallFinding::service), internal::Field("pid", &StallFinding::pid),
    internal::Field("loop", &StallFinding::loop),
    internal::Field("stall_id", &StallFinding::stall_id),
    internal::Field("start_ns", &StallFinding::start_ns),
    internal::Field("duration_s", &StallFinding::duration_s),
    internal::Field("ongoing", &StallFinding::ongoing),
    internal::Field("estimated", &StallFinding::estimated),
    internal::Field("class", &StallFinding::stall_class),
    internal::Field("syscall", &StallFinding::syscall),
    internal::Field("fd_target", &StallFinding::fd_target),
    internal::Field("cpu_ratio", &StallFinding::cpu_ratio),
    internal::Field("wait_ratio", &StallFinding::wait_ratio),
    internal::Field("hint", &StallFinding::hint),
    internal::Field("samples_failed", &StallFinding::samples_failed),
    internal::Field("reports_suppressed", &StallFinding::reports_suppressed),
    internal::Field("sampling_note", &StallFinding::sampling_note));

// The fields of a calls finding other than `calls`, in the order the decoder checks them.
inline constexpr auto kCallsFields = std::make_tuple(
    internal::Field("service", &CallsFinding::service), internal::Field("pid", &CallsFinding::pid),
    internal::Field("loop", &CallsFinding::loop), internal::Field("end_ns", &CallsFinding::end_ns),
    internal::Field("window_s", &CallsFinding::window_s),
    internal::Field("overflow", &CallsFinding::overflow));

// The fields of one entry of `calls` other than `site`.
inline constexpr auto kCallSiteFields = std::make_tuple(
    internal::Field("call", &CallSiteStats::call), internal::Field("count", &CallSiteStats::count),
    internal::Field("total_s", &CallSiteStats::total_s),
    internal::Field("max_s", &CallSiteStats::max_s),
    internal::Field("p99_s", &CallSiteStats::p99_s),
    internal::Field("buckets", &CallSiteStats::buckets));

static_assert(internal::MemberCount<CallsFinding>() ==
                  std::tuple_size_v<decltype(kCallsFields)> + 1,  // + calls
              "a CallsFinding member is missing from kCallsFields");

static_assert(internal::MemberCount<DelayFinding>() == std::tuple_size_v<decltype(kDelayFields)>,
              "a DelayFinding member is missing from kDelayFields");
static_assert(internal::MemberCount<StallFinding>() ==
                  std::tuple_size_v<decltype(kStallFields)> + 1,  // + stacks
              "a StallFinding member is missing from kStallFields");

// Calls fn(field) for every field of `table`, in order.
template <typename Table, typename Fn>
constexpr void ForEachField(const Table& table, Fn&& fn) {
  std::apply([&](const auto&... field) { (fn(field), ...); }, table);
}

// Calls fn(field) for the fields of `table` in order while it returns true; false if one did not.
template <typename Table, typename Fn>
constexpr bool AllFields(const Table& table, Fn&& fn) {
  return std::apply([&](const auto&... field) { return (fn(field) && ...); }, table);
}

// Calls fn(obj.*member) for the field of `table` named `name`; false when no field has that name.
template <typename Table, typename Struct, typename Fn>
constexpr bool VisitFieldNamed(const Table& table, std::string_view name, Struct& obj, Fn&& fn) {
  return std::apply(
      [&](const auto&... field) {
        return ((field.name == name && (fn(obj.*field.member), true)) || ...);
      },
      table);
}

}  // namespace stallwatch
