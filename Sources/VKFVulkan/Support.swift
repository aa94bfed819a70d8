import VKFCore

/// Ops the Vulkan backend implements, by the dtypes of their main operand.
/// Kernel files add their op here when it lands (one line each, keep the order of `Op`).
enum VulkanSupport {
  static let table: [Op: Set<DType>] = [
    .fill: Set(DType.allCases),
    .copy: Set(DType.allCases),
    .cast: [.f32, .f16, .bf16],
    .permute: [.f32],
    .matmul: [.f32, .f16, .bf16],  // A and B may be 16-bit; C is f32
    .dequantizeNF4: [.f32],  // keyed by the f32 output / compute dtype, as on the CPU
    .matmulNF4: [.f32],
    .dequantizeInt8: [.f32], .matmulInt8: [.f32], .fakeQuantize: [.f32],
    .loraForward: [.f32, .f16, .bf16],  // keyed by the dense base's storage
    // transformer blocks (f32; embedding's main operand is the table, its ids are i32)
    .rmsNorm: [.f32], .rmsNormBackward: [.f32],
    .layerNorm: [.f32], .layerNormBackward: [.f32],
    .rope: [.f32], .ropeBackward: [.f32],
    .causalSoftmax: [.f32], .causalSoftmaxBackward: [.f32],
    .attention: [.f32], .attentionBackward: [.f32],
    .swiglu: [.f32], .swigluBackward: [.f32],
    .activation: [.f32], .activationBackward: [.f32],
    .embedding: [.f32, .f16, .bf16], .embeddingBackward: [.f32],  // a frozen table may be 16-bit
    .crossEntropy: [.f32], .preferenceLoss: [.f32],
    // mixture of experts (routing indices and offsets are i32 operands)
    .moeRoute: [.f32], .moeRouteBackward: [.f32], .moeDispatch: [.f32], .moeGather: [.f32],
    .moeCombine: [.f32], .moeCombineBackward: [.f32], .groupedMatmul: [.f32, .f16, .bf16],  // b may be frozen 16-bit experts
    .groupedMatmulNF4: [.f32],  // frozen NF4 experts; a and c f32
    .moeRouterStatistics: [.f32], .moeAuxLoss: [.f32],
    // elementwise and reductions
    .add: [.f32], .mul: [.f32], .scale: [.f32], .scaleRows: [.f32], .sumOfSquares: [.f32], .dropoutMask: [.f32],
    // optimizer
    .adamW: [.f32],
    // generation (keyed by the f32 logits; ids and presence are i32)
    .sampleTokens: [.f32],
  ]

  static func supports(_ op: Op, _ dtype: DType) -> Bool { table[op]?.contains(dtype) ?? false }
}
