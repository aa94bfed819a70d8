// A whole model (an adapter merged in) written as GGUF for llama.cpp, with the tensor types
// llama.cpp's tools choose per outtype: what `vkfinetune export --format gguf` writes.
import Foundation
import VKFCore
import VKFModel

/// Writes a llama-architecture model's weights as GGUF. The metadata comes either from the
/// GGUF the model was loaded from (llama.cpp's converter wrote it; a merged adapter changes
/// none of it) or from a Hugging Face directory (`GGUFHFMetadata`, as the converter builds it).
public enum GGUFModelExport {
  /// `--outtype`: the converter's f32 / f16 / bf16 / q8_0, and llama-quantize's mixes.
  public enum OutType: String, CaseIterable, Sendable {
    case f32, f16, bf16, q8_0, q4_0, q4_k_m, q5_k_m, q6_k
    /// `general.file_type` (LlamaFileType).
    public var fileType: UInt32 {
      switch self {
      case .f32: 0
      case .f16: 1
      case .bf16: 32
      case .q8_0: 7
      case .q4_0: 2
      case .q4_k_m: 15
      case .q5_k_m: 17
      case .q6_k: 18
      }
    }

    /// The block type most 2-D weights get.
    var baseType: GGMLType {
      switch self {
      case .f32: .f32
      case .f16: .f16
      case .bf16: .bf16
      case .q8_0: .q8_0
      case .q4_0: .q4_0
      case .q4_k_m: .q4_K
      case .q5_k_m: .q5_K
      case .q6_k: .q6_K
      }
    }
  }

  /// What `storedType` needs to know of the model besides the tensor.
  public struct Facts: Sendable {
    public var layers: Int
    public var heads: Int
    public var kvHeads: Int
    public var tiedEmbeddings: Bool
    public init(layers: Int, heads: Int, kvHeads: Int, tiedEmbeddings: Bool) {
      self.layers = layers
      self.heads = heads
      self.kvHeads = kvHeads
      self.tiedEmbeddings = tiedEmbeddings
    }
  }

  /// llama-quantize's `use_more_bits`: the first and last eighth of the layers and every third
  /// one between keep more bits under the _M mixes.
  static func useMoreBits(_ layer: Int, _ layers: Int) -> Bool {
    layer < layers / 8 || layer >= 7 * layers / 8 || (layer - layers / 8) % 3 == 2
  }

  /// The stored type of a tensor (GGUF name, GGUF dimensions: row length first) under
  /// `outtype`, as llama.cpp's tools choose it for a llama model without an importance matrix:
  /// - 1-D tensors and norms: F32. f32 / f16 / bf16: every weight that type.
  /// - The output head (the token embedding when it is the tied head): Q8_0 when its rows do
  ///   not divide into the base type's blocks, else Q6_K (Q8_0 under q8_0).
  /// - q4_k_m / q5_k_m: attn_v and ffn_down of the `useMoreBits` layers Q6_K; an 80-layer
  ///   grouped-query llama (70B) keeps attn_v at Q5_K at least.
  /// - Rows not a multiple of 256 demote Q4_K → Q5_0, Q5_K → Q5_1, Q6_K → Q8_0; rows not a
  ///   multiple of 32 are F16.
  public static func storedType(_ name: String, dimensions: [Int], outtype: OutType, facts: Facts) -> GGMLType {
    if dimensions.count <= 1 || name.hasSuffix("_norm.weight") || !name.hasSuffix(".weight") { return .f32 }
    let base = outtype.baseType
    if !GGUFQuantize.types.contains(base) { return base }
    let columns = dimensions[0]
    var type = base
    if name == "output.weight" || (facts.tiedEmbeddings && name == "token_embd.weight") {
      type = columns % base.blockLayout.elements != 0 ? .q8_0 : base == .q8_0 ? .q8_0 : .q6_K
    } else if let layer = layerIndex(name), outtype == .q4_k_m || outtype == .q5_k_m {
      if name.hasSuffix(".attn_v.weight") {
        if useMoreBits(layer, facts.layers) { type = .q6_K }
        if facts.layers == 80 && facts.heads != facts.kvHeads && type == .q4_K { type = .q5_K }
      } else if name.hasSuffix(".ffn_down.weight"), useMoreBits(layer, facts.layers) {
        type = .q6_K
      }
    }
    if columns % type.blockLayout.elements != 0 {
      switch type {
      case .q4_K: type = .q5_0
      case .q5_K: type = .q5_1
      case .q6_K: type = .q8_0
      default: break
      }
      if columns % type.blockLayout.elements != 0 { type = .f16 }
    }
    return type
  }

  /// N of a `blk.N.…` name.
  static func layerIndex(_ name: String) -> Int? {
    guard name.hasPrefix("blk.") else { return nil }
    return Int(name.dropFirst(4).prefix { $0.isNumber })
  }

  /// A tensor written as given (llama.cpp's rope_freqs): name, GGUF dimensions, type, bytes.
  public struct ExtraTensor: Sendable {
    public var name: String
    public var dimensions: [Int]
    public var type: GGMLType
    public var bytes: [UInt8]
    public init(name: String, dimensions: [Int], type: GGMLType, bytes: [UInt8]) {
      self.name = name
      self.dimensions = dimensions
      self.type = type
      self.bytes = bytes
    }
  }

  /// Writes `weights` (adapters merged or none) from a GGUF `source`: its metadata is kept
  /// (general.name, file type and quantisation version set anew) and its tensors without a
  /// Hugging Face counterpart (llama 3's rope_freqs) are copied as they are.
  public static func write(weights: DecoderWeights, source: GGUFFile, name: String, outtype: OutType,
                           to path: String) throws {
    guard let arch = source.architecture else { throw PEFTError("\(source.path) names no general.architecture") }
    guard source.metadata["tokenizer.ggml.model"] != nil else {
      throw PEFTError("\(source.path) has no tokenizer.ggml.* metadata to carry into the export")
    }
    var metadata = [(String, GGUFValue)]()
    for key in source.metadataKeys where key != "general.architecture" && key != "general.alignment" {
      if let v = source.metadata[key] { metadata.append((key, v)) }
    }
    let extra = source.tensors.filter { GGUFNameMap.huggingFaceName(for: $0.name, architecture: arch) == nil }.map { t in
      ExtraTensor(name: t.name, dimensions: t.dimensions, type: t.type, bytes: source.withRawBytes(of: t) { Array($0) })
    }
    try write(weights: weights, architecture: arch, metadata: metadata, extraTensors: extra, name: name,
              outtype: outtype, origin: source.path, to: path)
  }

  /// Writes `weights` with `metadata` (converter order; general.name, general.file_type and
  /// general.quantization_version are set here) and `extraTensors` before the weights.
  public static func write(weights: DecoderWeights, architecture arch: String, metadata: [(String, GGUFValue)],
                           extraTensors: [ExtraTensor], name: String, outtype: OutType, origin: String,
                           to path: String) throws {
    guard GGUFNameMap.permutedArchitectures.contains(arch) else {
      throw PEFTError("\(origin): whole-model GGUF export supports the llama architecture, not \(arch)")
    }
    guard weights.shape.moe == nil else {
      throw PEFTError("\(origin): a mixture-of-experts model cannot be exported as GGUF yet")
    }
    var w = GGUFWriter(architecture: arch)
    for (key, value) in metadata { w.set(key, value) }
    w.set("general.name", .string(name))
    w.set("general.file_type", .uint32(outtype.fileType))
    w.set("general.quantization_version", .uint32(2))
    let be = weights.backend, s = weights.shape
    let facts = Facts(layers: s.layers, heads: s.heads, kvHeads: s.kvHeads, tiedEmbeddings: s.tiedEmbeddings)
    // The converter writes its generated tensors (rope_freqs) before the checkpoint's.
    let mapped = Set(try HFModelWriter.denseTensors(of: weights).compactMap {
      GGUFNameMap.ggufName(forHuggingFace: $0.0, architecture: arch)
    })
    for t in extraTensors where !mapped.contains(t.name) {
      try w.addTensor(t.name, dimensions: t.dimensions, type: t.type, bytes: t.bytes)
    }
    // The converter's order: the checkpoint's names sorted (ASCII, so String order is byte order).
    let dense = try HFModelWriter.denseTensors(of: weights).sorted { $0.name < $1.name }
    for (hfName, tensor) in dense {
      guard let gguf = GGUFNameMap.ggufName(forHuggingFace: hfName, architecture: arch) else {
        throw PEFTError("\(hfName) has no llama.cpp tensor name")
      }
      let shape = tensor.shape
      let values = GGUFNameMap.converterRows(try be.floats(tensor), ggufName: gguf, architecture: arch, rows: shape[0],
                                             heads: s.heads, kvHeads: s.kvHeads)
      let dims = Array(shape.reversed())
      let type = storedType(gguf, dimensions: dims, outtype: outtype, facts: facts)
      if GGUFQuantize.types.contains(type) {
        try w.addTensor(gguf, dimensions: dims, type: type, bytes: GGUFQuantize.quantize(values, as: type))
      } else {
        try w.addTensor(gguf, shape: shape, values: values, as: type)
      }
    }
    try w.write(to: path)
  }
}
