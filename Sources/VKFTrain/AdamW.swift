// AdamW over trainable tensors, with the optimizer state on the device or paged in host memory.
import VKFCore

/// Where AdamW keeps its two moments (m, v: 8 bytes per trained parameter).
public enum OptimizerStatePlacement: Equatable, Sendable, Codable {
  /// Device memory: fastest, costs 2× the trained parameters' size on the GPU.
  case device
  /// Host-visible memory, streamed through a small device window each step (see `AdamW`).
  case host
  /// Device when the state fits in `budgetBytes` of device memory left after everything
  /// else (`otherDeviceBytes` in `AdamW.init`), else host.
  case auto(budgetBytes: Int)

  /// Parses the CLI value `device`, `host` or `auto` (auto needs a budget).
  public static func parse(_ text: String, budgetBytes: Int?) throws -> OptimizerStatePlacement {
    switch text.lowercased() {
    case "device": return .device
    case "host": return .host
    case "auto":
      guard let budgetBytes else {
        throw TrainingError.invalidConfig(field: "optimizer_state", value: text,
          requirement: "auto needs a device memory budget (--memory-budget); or use device or host")
      }
      return .auto(budgetBytes: budgetBytes)
    default:
      throw TrainingError.invalidConfig(field: "optimizer_state", value: text, requirement: "use device, host or auto")
    }
  }

  /// The memory kind for `stateBytes` of state when `otherDeviceBytes` are used otherwise.
  public func resolve(stateBytes: Int, otherDeviceBytes: Int) -> MemoryKind {
    switch self {
    case .device: return .device
    case .host: return .hostVisible
    case .auto(let budget): return otherDeviceBytes + stateBytes <= budget ? .device : .hostVisible
    }
  }
}

/// AdamW's constant hyper-parameters (the learning rate comes per step from the schedule).
public struct AdamWConfig: Equatable, Sendable {
  public var beta1: Float = 0.9
  public var beta2: Float = 0.999
  public var eps: Float = 1e-8
  /// Decoupled weight decay, applied only to tensors whose `decays` is true.
  public var weightDecay: Float = 0
  /// Global gradient-norm limit over every trained tensor; 0 disables clipping.
  public var maxGradNorm: Float = 1

  /// A config; defaults are transformers' `TrainingArguments` (adam_beta1 0.9, adam_beta2
  /// 0.999, adam_epsilon 1e-8, weight_decay 0, max_grad_norm 1).
  public init(beta1: Float = 0.9, beta2: Float = 0.999, eps: Float = 1e-8, weightDecay: Float = 0,
              maxGradNorm: Float = 1) {
    self.beta1 = beta1; self.beta2 = beta2; self.eps = eps
    self.weightDecay = weightDecay; self.maxGradNorm = maxGradNorm
  }
}

/// `torch.optim.AdamW` over `[TrainableTensor]` with `clip_grad_norm_` fused in: Σgrad² of
/// every tensor accumulates into one device scalar that each `backend.adamW` call reads.
///
/// Paged state (`placement` host): m and v live in `.hostVisible` memory and each step copies
/// them, in chunks of at most `windowElements`, into a device window, runs `adamW` on the
/// matching views of parameter and gradient, and copies them back. We stream rather than bind
/// host memory to the kernel directly: the kernel then always reads device memory (on a
/// discrete GPU a shader reading host memory pays PCIe latency per access, and some drivers
/// do not expose host-visible storage buffers to compute efficiently), and the device cost is
/// bounded by the window (2 × windowElements × 4 bytes) whatever the model size. AdamW is
/// elementwise, so chunked results are bitwise those of one call (tested).
public final class AdamW {
  /// The backend of every tensor.
  public let backend: Backend
  /// The optimised tensors, in order.
  public let parameters: [TrainableTensor]
  /// Constant hyper-parameters.
  public let config: AdamWConfig
  /// Where m and v live.
  public let stateMemory: MemoryKind
  /// Completed optimizer steps (the next update uses bias corrections for step + 1).
  public private(set) var step = 0
  /// Default device window for paged state: 4 Mi elements (32 MiB for m and v together).
  public static let defaultWindowElements = 1 << 22

  private let m: [Tensor], v: [Tensor]
  private let window: (m: Tensor, v: Tensor)?
  private let windowElements: Int
  /// The step's device-side metrics, n = parameters.count: Σgrad² of each tensor (slots
  /// 0..<n, each its own so the reductions run side by side), the last S (slot n, `lastS`),
  /// the step's summed loss (slot n+1, `lossSum`) and its total S (`sumOfSquares`, alone in
  /// its own 256-byte line, so a kernel binding S never appears to touch the other slots).
  public let metrics: Tensor
  /// Slot of the summed loss the trainer accumulates (`metrics`).
  public let lossSum: Tensor
  /// S = Σ slots' Σgrad² + 0 · lastS + 0 · lossSum: a non-finite loss makes S NaN, and adamW
  /// skips the update on a non-finite S — so a bad step changes nothing, with no host check
  /// between. `lastS` keeps the previous step's S, so once a step is bad every later one is
  /// skipped too until the host, reading a step late, stops the run.
  public let sumOfSquares: Tensor
  /// The per-tensor partial slots (`metrics[0..<n]`).
  private let partials: Tensor
  /// The previous update's S (slot n; not reset between steps).
  private let lastS: Tensor
  /// (1, n+2): ones for the partials, 0 for the last S and the loss.
  private let totalWeights: Tensor
  private var sumOfSquaresFresh = false
  private let hyperDecay: Tensor, hyperNoDecay: Tensor

  /// Bytes of optimizer state for `elements` trained parameters.
  public static func stateBytes(elements: Int) -> Int { 8 * elements }

  /// Allocates zeroed moments for `parameters`. `otherDeviceBytes` (device memory used by
  /// weights, gradients and activations) is what `.auto` weighs against its budget;
  /// `windowElements` bounds the device window of paged state (rounded up to 64 elements, so
  /// every chunk view stays 256-byte aligned).
  public init(parameters: [TrainableTensor], config: AdamWConfig = .init(),
              placement: OptimizerStatePlacement = .device, otherDeviceBytes: Int = 0,
              windowElements: Int = AdamW.defaultWindowElements, backend: Backend) throws {
    guard !parameters.isEmpty else { throw TrainingError.noTrainingData("no trainable tensor to optimise") }
    guard windowElements > 0 else {
      throw TrainingError.invalidConfig(field: "windowElements", value: "\(windowElements)", requirement: "use a positive count")
    }
    var seen = Set<String>()
    for p in parameters {
      guard p.value.dtype == .f32, p.gradient.dtype == .f32, p.value.count == p.gradient.count else {
        throw TrainingError.invalidConfig(field: "trainable tensor", value: p.name,
          requirement: "value and gradient must be f32 of equal size")
      }
      guard seen.insert(p.name).inserted else {
        throw TrainingError.invalidConfig(field: "trainable tensor", value: p.name, requirement: "names must be unique")
      }
    }
    self.backend = backend
    self.parameters = parameters
    self.config = config
    let elements = parameters.reduce(0) { $0 + $1.count }
    let kind = placement.resolve(stateBytes: Self.stateBytes(elements: elements), otherDeviceBytes: otherDeviceBytes)
    stateMemory = kind
    m = try parameters.map { try backend.allocate([$0.count], .f32, memory: kind) }
    v = try parameters.map { try backend.allocate([$0.count], .f32, memory: kind) }
    for t in m + v { try backend.fill(t, value: 0) }
    let largest = parameters.map(\.count).max() ?? 0
    self.windowElements = min((windowElements + 63) / 64 * 64, (largest + 63) / 64 * 64)
    window = stateMemory == .hostVisible
      ? (try backend.allocate([self.windowElements]), try backend.allocate([self.windowElements])) : nil
    let slots = parameters.count
    // 64 floats = 256 bytes, the largest minStorageBufferOffsetAlignment Vulkan allows.
    let sOffset = (slots + 2 + 63) / 64 * 64
    metrics = try backend.allocate([sOffset + 1])
    try backend.fill(metrics, value: 0)
    partials = try metrics.view(offset: 0, shape: [slots])
    lastS = try metrics.view(offset: slots, shape: [1])
    lossSum = try metrics.view(offset: slots + 1, shape: [1])
    sumOfSquares = try metrics.view(offset: sOffset, shape: [1])
    totalWeights = try backend.tensor([Float](repeating: 1, count: slots) + [0, 0], shape: [1, slots + 2])
    hyperDecay = try backend.allocate([AdamWHyperParameters.count])
    hyperNoDecay = try backend.allocate([AdamWHyperParameters.count])
  }

  /// Bytes of device memory this optimizer holds (state on device, or the window).
  public var deviceBytes: Int {
    if let window { return window.m.byteCount + window.v.byteCount }
    return m.reduce(0) { $0 + $1.byteCount } * 2
  }

  /// The global gradient norm `gradScale · sqrt(Σ grad²)` over every tensor (what
  /// `clip_grad_norm_` returns), before clipping. Waits for the backend.
  public func gradientNorm(gradScale: Float = 1) throws -> Float {
    try queueFreshSumOfSquares()
    sumOfSquaresFresh = true
    let s = try backend.floats(sumOfSquares)[0]
    return gradScale * s.squareRoot()
  }

  /// One AdamW update at learning rate `lr` with the gradients times `gradScale`, clipped
  /// to `maxGradNorm`. Reuses the Σgrad² of a preceding `gradientNorm` call.
  public func update(lr: Float, gradScale: Float = 1) throws {
    if !sumOfSquaresFresh { try queueFreshSumOfSquares() }
    sumOfSquaresFresh = false
    try prepareStep(lr: lr, gradScale: gradScale)
    try queueUpdate()
  }

  /// S from zeroed partial slots (the eager path; a replayed step zeroes them at its start).
  private func queueFreshSumOfSquares() throws {
    try backend.fill(partials, value: 0)
    try queueSumOfSquares()
  }

  // MARK: - A step in two halves (recordable)

  /// The host half of a step: counts it and uploads its hyper-parameters (bias corrections
  /// of the new step count, `lr`, `gradScale`). Never waits. Call before the queued (or
  /// replayed) `queueSumOfSquares` + `queueUpdate` of the same step.
  public func prepareStep(lr: Float, gradScale: Float = 1) throws {
    step += 1
    var h = AdamWHyperParameters(lr: lr, beta1: config.beta1, beta2: config.beta2, eps: config.eps,
                                 weightDecay: config.weightDecay, step: step, gradScale: gradScale,
                                 maxGradNorm: config.maxGradNorm)
    try backend.upload(h.packed, to: hyperDecay)
    h.weightDecay = 0
    try backend.upload(h.packed, to: hyperNoDecay)
  }

  /// Sets the completed-step count back to `completed` after the steps past it were skipped
  /// on the device (a non-finite S).
  public func rewind(to completed: Int) { step = max(min(step, completed), 0) }

  /// Forgets the last prepared step after the device skipped its update (fp16's loss
  /// scaler goes on after an inf/NaN step): the step count goes back by one and the last S —
  /// non-finite, which would skip every later update too — is cleared. Ops only; call after
  /// reading the skipped step and before the next is queued.
  public func discardSkippedStep() throws {
    step = max(step - 1, 0)
    try backend.fill(lastS, value: 0)
  }

  /// Zeroes the step's metric slots (the Σgrad² partials and the summed loss; not the last
  /// S): ops only.
  public func queueResetMetrics() throws {
    try backend.fill(partials, value: 0)
    try backend.fill(lossSum, value: 0)
  }

  /// Queues Σgrad² of each tensor into its zeroed partial slot, then S = their sum
  /// + 0 · lastS + 0 · lossSum (one matmul): ops only, no host transfer.
  public func queueSumOfSquares() throws {
    for (i, p) in parameters.enumerated() {
      try backend.sumOfSquares(p.gradient, into: try partials.view(offset: i, shape: [1]))
    }
    let n = parameters.count + 2
    try backend.matmul(totalWeights, try metrics.view(offset: 0, shape: [n, 1]),
                       into: try sumOfSquares.view(shape: [1, 1]),
                       transposeA: false, transposeB: false, alpha: 1, beta: 0)
  }

  /// Queues the update of every tensor with the hyper-parameters of the last `prepareStep`,
  /// clipped by (and skipped on a non-finite) S: ops only, no host transfer.
  public func queueUpdate() throws {
    for (i, p) in parameters.enumerated() {
      let hyper = p.decays ? hyperDecay : hyperNoDecay
      let value = try p.value.reshaped([p.count]), grad = try p.gradient.reshaped([p.count])
      guard let window else {
        try backend.adamW(param: value, grad: grad, m: m[i], v: v[i], hyper: hyper, gradSumOfSquares: sumOfSquares)
        continue
      }
      var start = 0
      while start < p.count {
        let n = min(windowElements, p.count - start)
        let wm = try window.m.view(shape: [n]), wv = try window.v.view(shape: [n])
        let hm = try m[i].view(offset: start, shape: [n]), hv = try v[i].view(offset: start, shape: [n])
        try backend.copy(hm, to: wm)
        try backend.copy(hv, to: wv)
        try backend.adamW(param: try value.view(offset: start, shape: [n]),
                          grad: try grad.view(offset: start, shape: [n]),
                          m: wm, v: wv, hyper: hyper, gradSumOfSquares: sumOfSquares)
        try backend.copy(wm, to: hm)
        try backend.copy(wv, to: hv)
        start += n
      }
    }
    try backend.copy(sumOfSquares, to: lastS)
  }

  // MARK: - State for checkpoints

  /// Checkpoint key of a tensor's first moment (torch's `exp_avg`).
  public static func firstMomentKey(_ name: String) -> String { name + ".exp_avg" }
  /// Checkpoint key of a tensor's second moment (torch's `exp_avg_sq`).
  public static func secondMomentKey(_ name: String) -> String { name + ".exp_avg_sq" }

  /// Every moment by checkpoint key, as (shape, values). Waits for the backend.
  public func stateValues() throws -> [String: ([Int], [Float])] {
    var out: [String: ([Int], [Float])] = [:]
    for (i, p) in parameters.enumerated() {
      out[Self.firstMomentKey(p.name)] = ([p.count], try backend.floats(m[i]))
      out[Self.secondMomentKey(p.name)] = ([p.count], try backend.floats(v[i]))
    }
    return out
  }

  /// Restores moments (by checkpoint key) and the completed step count.
  public func loadState(step: Int, values: [String: [Float]]) throws {
    guard step >= 0 else { throw TrainingError.checkpoint(path: "", detail: "optimizer step \(step) < 0") }
    for (i, p) in parameters.enumerated() {
      for (key, t) in [(Self.firstMomentKey(p.name), m[i]), (Self.secondMomentKey(p.name), v[i])] {
        guard let vals = values[key], vals.count == p.count else {
          throw TrainingError.checkpoint(path: "", detail: "optimizer state \(key) is missing or has the wrong size")
        }
        try backend.upload(vals, to: t)
      }
    }
    self.step = step
    sumOfSquaresFresh = false
  }
}
