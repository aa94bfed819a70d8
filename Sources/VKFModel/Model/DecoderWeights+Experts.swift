import VKFCore

// Loading a sparse layer's experts: Hugging Face stores one 2-D tensor per expert and
// projection (`…experts.{e}.w1.weight`); the model runs each projection kind over all experts
// at once (`Backend.groupedMatmul`), so they are uploaded into one (E, ·, ·) stack per layer
// and kind, each expert's tensor a view of its row block.

/// One layer's stacked weights of one projection kind, with its experts' names in order.
final class ExpertStack {
  /// (E, rows, cols).
  let shape: [Int]
  /// The dense stack on the backend; nil when it is quantised (QLoRA).
  let tensor: Tensor?
  /// Hugging Face names of experts 0..<E.
  let names: [String]
  /// Elements per expert.
  let perExpert: Int
  /// The stacked gradient, set when any expert of the stack trains.
  var gradient: Tensor?
  /// The quantised stack (E·rows, cols), once every expert was collected.
  private(set) var quantized: LinearWeight?
  /// Host values collected for quantisation, and how many experts are in.
  private var pending: [Float] = [], collected = 0

  init(shape: [Int], tensor: Tensor?, names: [String]) {
    self.shape = shape; self.tensor = tensor; self.names = names
    perExpert = shape.dropFirst().reduce(1, *)
  }

  /// The stack as the model multiplies it.
  func weight() throws -> LinearWeight {
    if let tensor { return .dense(tensor) }
    guard let quantized else {
      throw ModelWeightsError(names.first ?? "", "the expert stack was never completed (\(collected) of \(names.count) experts)")
    }
    return quantized
  }

  /// Adds expert `e`'s values; with the last one, quantises the whole stack through
  /// `quantizer` (module name, values, rows, cols → base) and frees the host copy.
  func collect(_ values: [Float], expert e: Int, quantizer: DecoderWeights.ProjectionBaseMaker?) throws {
    guard let quantizer else { throw ModelWeightsError(names[e], "a quantised expert stack needs a quantiser") }
    if pending.isEmpty { pending = [Float](repeating: 0, count: names.count * perExpert) }
    pending.withUnsafeMutableBufferPointer { p in
      values.withUnsafeBufferPointer { v in
        guard let dst = p.baseAddress, let src = v.baseAddress else { return }
        (dst + e * perExpert).update(from: src, count: min(v.count, perExpert))
      }
    }
    collected += 1
    guard collected == names.count else { return }
    let module = names[0].replacingOccurrences(of: ".experts.0.", with: ".experts.")  // …experts.w1.weight
    quantized = try quantizer(String(module.dropLast(".weight".count)), pending, shape[0] * shape[1], shape[2])
    pending = []
  }
}

/// Every sparse layer's stacks, and where each expert's name lands.
struct ExpertStacks {
  /// By layer: gate, up, down.
  var byLayer: [Int: (gate: ExpertStack, up: ExpertStack, down: ExpertStack)] = [:]
  /// Expert tensor name → its stack and expert index.
  var slot: [String: (ExpertStack, Int)] = [:]
  /// Every stack, in layer then kind order.
  var all: [ExpertStack] = []

  /// Layer `i`'s `ExpertWeights` (nil in a dense layer), its router the `router` module.
  func weights(layer i: Int, router: Linear?, shared: SharedExpertWeights?) throws -> ExpertWeights? {
    guard let s = byLayer[i] else { return nil }
    guard let router else { throw ModelWeightsError(s.gate.names[0], "a sparse layer without its router") }
    return ExpertWeights(router: router,
                         gate: try s.gate.weight(), up: try s.up.weight(), down: try s.down.weight(),
                         gateGrad: s.gate.gradient, upGrad: s.up.gradient, downGrad: s.down.gradient, shared: shared)
  }
}

extension DecoderWeights {
  /// Allocates the (uninitialised) stacks of every sparse layer of `shape`: f32, or
  /// `frozenStorage` (f16 / bf16) for a stack none of whose experts trains, or with
  /// `quantized` (QLoRA) no dense stack for those: they are collected and quantised.
  static func expertStacks(_ shape: TransformerShape, _ backend: Backend, trainable: TrainableParameters,
                           frozenStorage: DType, quantized: Bool) throws -> ExpertStacks {
    var out = ExpertStacks()
    guard let m = shape.moe else { return out }
    let (e, f, c) = (m.experts, m.intermediate, shape.hidden)
    for i in 0..<shape.layers where shape.isSparse(layer: i) {
      let names = (0..<e).map { m.expertNames(i, $0) }
      func stack(_ shape: [Int], _ names: [String]) throws -> ExpertStack {
        let trained = names.contains(where: trainable.contains)
        if quantized, !trained { return ExpertStack(shape: shape, tensor: nil, names: names) }
        let dtype = trained ? DType.f32 : frozenStorage
        return ExpertStack(shape: shape, tensor: try backend.allocate(shape, dtype, memory: .device), names: names)
      }
      let gate = try stack([e, f, c], names.map(\.gate)), up = try stack([e, f, c], names.map(\.up))
      let down = try stack([e, c, f], names.map(\.down))
      out.byLayer[i] = (gate, up, down)
      for stack in [gate, up, down] {
        out.all.append(stack)
        for (j, n) in stack.names.enumerated() { out.slot[n] = (stack, j) }
      }
    }
    return out
  }
}

extension Backend {
  /// `groupedMatmul` (not transposeA) over a stack of `experts` stored dense or NF4.
  func expertMatmul(_ a: Tensor, _ w: LinearWeight, experts: Int, into c: Tensor, offsets: Tensor,
                    transposeB: Bool, beta: Float) throws {
    switch w {
    case .dense(let t):
      try groupedMatmul(a, t, into: c, offsets: offsets, transposeA: false, transposeB: transposeB, beta: beta)
    case .nf4(let q):
      try groupedMatmulNF4(a, q, experts: experts, into: c, offsets: offsets, transposeB: transposeB, beta: beta)
    case .int8:
      throw VKFError.dtypeMismatch(op: Op.groupedMatmul.rawValue, detail: "int8 expert stacks are not supported")
    }
  }
}
