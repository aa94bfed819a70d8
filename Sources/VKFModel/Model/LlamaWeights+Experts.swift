import VKFCore

// Loading a sparse layer's experts: Hugging Face stores one 2-D tensor per expert and
// projection (`…experts.{e}.w1.weight`); the model runs each projection kind over all experts
// at once (`Backend.groupedMatmul`), so they are uploaded into one (E, ·, ·) stack per layer
// and kind, each expert's tensor a view of its row block.

/// One layer's stacked weights of one projection kind, with its experts' names in order.
final class ExpertStack {
  /// (E, rows, cols) on the backend.
  let tensor: Tensor
  /// Hugging Face names of experts 0..<E.
  let names: [String]
  /// Elements per expert.
  let perExpert: Int
  /// The stacked gradient, set when any expert of the stack trains.
  var gradient: Tensor?

  init(tensor: Tensor, names: [String]) {
    self.tensor = tensor; self.names = names
    perExpert = tensor.shape.dropFirst().reduce(1, *)
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

  /// Layer `i`'s `ExpertWeights` (nil in a dense layer), the router made by `router`.
  func weights(layer i: Int, router: (String) throws -> Linear) throws -> ExpertWeights? {
    guard let s = byLayer[i] else { return nil }
    let name = s.gate.names[0]  // …experts.0.w1.weight → the block prefix
    guard let range = name.range(of: ".experts.") else { throw ModelWeightsError(name, "is not an expert weight") }
    return ExpertWeights(router: try router(String(name[..<range.lowerBound]) + ".gate"),
                         gate: s.gate.tensor, up: s.up.tensor, down: s.down.tensor,
                         gateGrad: s.gate.gradient, upGrad: s.up.gradient, downGrad: s.down.gradient)
  }
}

extension LlamaWeights {
  /// Allocates the (uninitialised) stacks of every sparse layer of `shape`: f32, or
  /// `frozenStorage` (f16 / bf16) for a stack none of whose experts trains.
  static func expertStacks(_ shape: TransformerShape, _ backend: Backend, trainable: TrainableParameters,
                           frozenStorage: DType) throws -> ExpertStacks {
    var out = ExpertStacks()
    guard let m = shape.moe else { return out }
    let (e, f, c) = (m.experts, m.intermediate, shape.hidden)
    for i in 0..<shape.layers where shape.isSparse(layer: i) {
      let names = (0..<e).map { m.expertNames(i, $0) }
      func stack(_ shape: [Int], _ names: [String]) throws -> ExpertStack {
        let dtype = names.contains(where: trainable.contains) ? DType.f32 : frozenStorage
        return ExpertStack(tensor: try backend.allocate(shape, dtype, memory: .device), names: names)
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
