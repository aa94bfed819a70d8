// `lr_scheduler_kwargs`: the per-schedule extras of Hugging Face TrainingArguments.

/// Schedule-specific extras, keyed exactly as transformers' `lr_scheduler_kwargs`; every field
/// is optional and its default depends on the schedule (see `LRSchedule`).
public struct LRSchedulerKwargs: Codable, Equatable, Sendable {
  /// Cosine waves (`cosine`, `cosine_with_min_lr`, `warmup_stable_decay`: default 0.5 = half a
  /// cosine down to the floor; `cosine_with_restarts`: hard restarts, default 1).
  public var numCycles: Double?
  /// `polynomial`: final learning rate, absolute (default 1e-7); must be below `learning_rate`.
  public var lrEnd: Double?
  /// `polynomial`: exponent of the decay (default 1.0 = linear).
  public var power: Double?
  /// `inverse_sqrt`: steps per unit of the 1/√ decay (default: the warmup steps, or 10 000 without warmup).
  public var timescale: Int?
  /// `cosine_with_min_lr`: floor as an absolute learning rate (exactly one of `min_lr`, `min_lr_rate`).
  public var minLr: Double?
  /// `cosine_with_min_lr`: floor as a fraction of `learning_rate` (exactly one of `min_lr`, `min_lr_rate`).
  public var minLrRate: Double?
  /// `warmup_stable_decay`: steps at the peak (default: `num_training_steps` − warmup − decay).
  public var numStableSteps: Int?
  /// `warmup_stable_decay`: steps of the decay phase (required).
  public var numDecaySteps: Int?
  /// `warmup_stable_decay`: warmup curve, `linear` (default), `cosine` or `1-sqrt`.
  public var warmupType: String?
  /// `warmup_stable_decay`: decay curve, `cosine` (default), `linear` or `1-sqrt`.
  public var decayType: String?
  /// `warmup_stable_decay`: floor (and warmup start) as a fraction of `learning_rate` (default 0).
  public var minLrRatio: Double?
  /// Keys found while decoding that no schedule takes; `LRSchedule` rejects them by name.
  public private(set) var unrecognizedKeys: [String] = []

  enum CodingKeys: String, CodingKey, CaseIterable {
    case numCycles = "num_cycles"
    case lrEnd = "lr_end"
    case power
    case timescale
    case minLr = "min_lr"
    case minLrRate = "min_lr_rate"
    case numStableSteps = "num_stable_steps"
    case numDecaySteps = "num_decay_steps"
    case warmupType = "warmup_type"
    case decayType = "decay_type"
    case minLrRatio = "min_lr_ratio"
  }

  private struct AnyKey: CodingKey {
    var stringValue: String
    var intValue: Int? { nil }
    init(stringValue: String) { self.stringValue = stringValue }
    init?(intValue: Int) { nil }
  }

  /// Creates extras; unset fields take the schedule's default.
  public init(
    numCycles: Double? = nil, lrEnd: Double? = nil, power: Double? = nil, timescale: Int? = nil,
    minLr: Double? = nil, minLrRate: Double? = nil, numStableSteps: Int? = nil,
    numDecaySteps: Int? = nil, warmupType: String? = nil, decayType: String? = nil,
    minLrRatio: Double? = nil
  ) {
    self.numCycles = numCycles
    self.lrEnd = lrEnd
    self.power = power
    self.timescale = timescale
    self.minLr = minLr
    self.minLrRate = minLrRate
    self.numStableSteps = numStableSteps
    self.numDecaySteps = numDecaySteps
    self.warmupType = warmupType
    self.decayType = decayType
    self.minLrRatio = minLrRatio
  }

  /// Decodes the known keys and remembers unknown ones (transformers raises TypeError for them).
  public init(from decoder: any Decoder) throws {
    let c = try decoder.container(keyedBy: CodingKeys.self)
    numCycles = try c.decodeIfPresent(Double.self, forKey: .numCycles)
    lrEnd = try c.decodeIfPresent(Double.self, forKey: .lrEnd)
    power = try c.decodeIfPresent(Double.self, forKey: .power)
    timescale = try c.decodeIfPresent(Int.self, forKey: .timescale)
    minLr = try c.decodeIfPresent(Double.self, forKey: .minLr)
    minLrRate = try c.decodeIfPresent(Double.self, forKey: .minLrRate)
    numStableSteps = try c.decodeIfPresent(Int.self, forKey: .numStableSteps)
    numDecaySteps = try c.decodeIfPresent(Int.self, forKey: .numDecaySteps)
    warmupType = try c.decodeIfPresent(String.self, forKey: .warmupType)
    decayType = try c.decodeIfPresent(String.self, forKey: .decayType)
    minLrRatio = try c.decodeIfPresent(Double.self, forKey: .minLrRatio)
    let known = Set(CodingKeys.allCases.map(\.rawValue))
    let all = try decoder.container(keyedBy: AnyKey.self).allKeys.map(\.stringValue)
    unrecognizedKeys = all.filter { !known.contains($0) }.sorted()
  }

  /// Encodes the set keys only, so a round trip keeps "unset = schedule default".
  public func encode(to encoder: any Encoder) throws {
    var c = encoder.container(keyedBy: CodingKeys.self)
    try c.encodeIfPresent(numCycles, forKey: .numCycles)
    try c.encodeIfPresent(lrEnd, forKey: .lrEnd)
    try c.encodeIfPresent(power, forKey: .power)
    try c.encodeIfPresent(timescale, forKey: .timescale)
    try c.encodeIfPresent(minLr, forKey: .minLr)
    try c.encodeIfPresent(minLrRate, forKey: .minLrRate)
    try c.encodeIfPresent(numStableSteps, forKey: .numStableSteps)
    try c.encodeIfPresent(numDecaySteps, forKey: .numDecaySteps)
    try c.encodeIfPresent(warmupType, forKey: .warmupType)
    try c.encodeIfPresent(decayType, forKey: .decayType)
    try c.encodeIfPresent(minLrRatio, forKey: .minLrRatio)
  }

  /// The keys that are set (including unrecognized ones), for checking against a schedule.
  var setKeys: [String] {
    let present: [(CodingKeys, Bool)] = [
      (.numCycles, numCycles != nil), (.lrEnd, lrEnd != nil), (.power, power != nil),
      (.timescale, timescale != nil), (.minLr, minLr != nil), (.minLrRate, minLrRate != nil),
      (.numStableSteps, numStableSteps != nil), (.numDecaySteps, numDecaySteps != nil),
      (.warmupType, warmupType != nil), (.decayType, decayType != nil), (.minLrRatio, minLrRatio != nil),
    ]
    return present.filter(\.1).map(\.0.rawValue) + unrecognizedKeys
  }
}
