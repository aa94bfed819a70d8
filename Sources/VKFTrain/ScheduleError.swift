// Errors raised while building an `LRSchedule` from its config.

/// Why an `LRSchedule` config was rejected; each description says what to change.
public enum LRScheduleError: Error, Equatable, Sendable, CustomStringConvertible {
  /// `lr_scheduler_type` names no schedule vkfinetune implements.
  case unknownSchedulerType(String, supported: [String])
  /// `lr_scheduler_kwargs` holds keys the chosen schedule does not take.
  case unexpectedKwargs([String], schedulerType: String, accepted: [String])
  /// The chosen schedule needs a key in `lr_scheduler_kwargs` that is absent.
  case missingKwarg(String, schedulerType: String, hint: String)
  /// Two keys were given where only one of them may be.
  case conflictingKwargs(String, String, schedulerType: String)
  /// A field holds a value outside its allowed range.
  case invalidValue(field: String, value: String, requirement: String)

  /// A message naming the problem and the fix.
  public var description: String {
    switch self {
    case let .unknownSchedulerType(name, supported):
      return "unknown lr_scheduler_type \"\(name)\"; use one of: \(supported.joined(separator: ", "))"
    case let .unexpectedKwargs(keys, type, accepted):
      let takes = accepted.isEmpty ? "takes no lr_scheduler_kwargs" : "accepts only: \(accepted.joined(separator: ", "))"
      return "lr_scheduler_kwargs \(keys.joined(separator: ", ")) not used by \"\(type)\"; remove them (\"\(type)\" \(takes))"
    case let .missingKwarg(key, type, hint):
      return "\"\(type)\" needs lr_scheduler_kwargs.\(key); \(hint)"
    case let .conflictingKwargs(a, b, type):
      return "\"\(type)\" takes only one of lr_scheduler_kwargs.\(a) and lr_scheduler_kwargs.\(b); remove one"
    case let .invalidValue(field, value, requirement):
      return "\(field) = \(value) is invalid: \(requirement)"
    }
  }
}
