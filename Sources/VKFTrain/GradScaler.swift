/// fp16 mixed precision's dynamic loss scale, with torch.amp.GradScaler's semantics (and
/// defaults): start at 2¹⁶; a step whose gradients hold inf/NaN is skipped and the scale
/// multiplied by 0.5; after 2000 consecutive clean steps it is multiplied by 2.
///
/// The trainer applies it as torch does: the loss is multiplied by the scale (through the
/// loss normalizer) and AdamW divides the gradients by it (its `gradScale`, which the clip
/// norm uses too). Here the activation and parameter gradients are f32 end to end (only
/// frozen weights and saved activations are 16-bit), so nothing underflows and these powers
/// of two change no bit; what fp16 can do is overflow — a saved activation beyond ±65504
/// becomes inf, its gradients inf/NaN — and then, as with GradScaler, the step is skipped on
/// the device (AdamW leaves every parameter and moment untouched), the scale backs off, the
/// run goes on and the log says so.
public struct GradScaler: Equatable, Sendable {
  /// The current scale (GradScaler's `get_scale()`).
  public private(set) var scale: Double
  /// Consecutive clean steps since the last change (GradScaler's `_growth_tracker`).
  public private(set) var growthTracker: Int
  /// ×scale after `growthInterval` clean steps (2).
  public let growthFactor: Double
  /// ×scale on a step with inf/NaN gradients (0.5).
  public let backoffFactor: Double
  /// Clean steps before the scale grows (2000).
  public let growthInterval: Int

  /// torch.amp.GradScaler's defaults: init_scale 65536, growth_factor 2, backoff_factor 0.5,
  /// growth_interval 2000.
  public init(initScale: Double = 65536, growthFactor: Double = 2, backoffFactor: Double = 0.5,
              growthInterval: Int = 2000) {
    scale = initScale; growthTracker = 0
    self.growthFactor = growthFactor; self.backoffFactor = backoffFactor
    self.growthInterval = max(1, growthInterval)
  }

  /// After a step: `foundInf` when its gradients (or loss) held inf/NaN — the step was
  /// skipped. Mirrors torch's `_amp_update_scale_`.
  public mutating func update(foundInf: Bool) {
    if foundInf {
      scale *= backoffFactor
      growthTracker = 0
    } else {
      growthTracker += 1
      if growthTracker == growthInterval {
        scale *= growthFactor
        growthTracker = 0
      }
    }
  }

  /// The scaler's state for a checkpoint (trainer_state.json): scale and growth tracker.
  public var state: [Double] { [scale, Double(growthTracker)] }

  /// Restores `state` (from `state`), keeping the factors and interval.
  public mutating func restore(_ state: [Double]) {
    guard state.count == 2, state[0].isFinite, state[0] > 0, state[1] >= 0 else { return }
    scale = state[0]; growthTracker = Int(state[1])
  }
}
