// A whole model (a GGUF base, an adapter merged in) written back as GGUF for llama.cpp, with
// the converter's tensor types per outtype: what `vkfinetune export --format gguf` writes.
import Foundation
import VKFCore
import VKFModel

/// Writes a llama-architecture model's weights as GGUF, its hyper-parameters and tokenizer
/// metadata taken from the GGUF it was loaded from (llama.cpp's converter wrote them; a merged
/// adapter changes neither).
public enum GGUFModelExport {
  /// `--outtype`: llama.cpp's `general.file_type` of each.
  public enum OutType: String, CaseIterable, Sendable {
    case f32, f16, bf16, q8_0, q4_0
    /// `general.file_type` (LlamaFileType).
    public var fileType: UInt32 {
      switch self {
      case .f32: 0
      case .f16: 1
      case .bf16: 32
      case .q8_0: 7
      case .q4_0: 2
      }
    }
  }

  /// The stored type of a tensor (GGUF name, GGUF dimensions) under `outtype`, as llama.cpp's
  /// tools choose it: 1-D tensors and norms F32; 2-D weights the outtype, except that a row
  /// not a multiple of 32 falls back to F16 for the block types, and under q4_0 (llama-quantize's
  /// rules) the output head — or the token embedding when it is the tied head — is Q8_0.
  public static func storedType(_ name: String, dimensions: [Int], outtype: OutType, tiedEmbeddings: Bool) -> GGMLType {
    if dimensions.count <= 1 || name.hasSuffix("_norm.weight") || !name.hasSuffix(".weight") { return .f32 }
    let base: GGMLType
    switch outtype {
    case .f32: return .f32
    case .f16: return .f16
    case .bf16: return .bf16
    case .q8_0: base = .q8_0
    case .q4_0:
      base = name == "output.weight" || (tiedEmbeddings && name == "token_embd.weight") ? .q8_0 : .q4_0
    }
    return dimensions[0] % GGUFQuantize.blockSize == 0 ? base : .f16
  }

  /// Writes `weights` (adapters merged or none) to `path` atomically. `source` is the GGUF the
  /// model was loaded from: its metadata is kept (general.name, file type and quantisation
  /// version set anew) and its tensors without a Hugging Face counterpart (e.g. llama 3's
  /// rope_freqs) are copied as they are.
  public static func write(weights: DecoderWeights, source: GGUFFile, name: String, outtype: OutType,
                           to path: String) throws {
    guard let arch = source.architecture, GGUFNameMap.permutedArchitectures.contains(arch) else {
      throw PEFTError("\(source.path): whole-model GGUF export supports the llama architecture here, not "
        + "\(source.architecture ?? "an unnamed one")")
    }
    guard weights.shape.moe == nil else {
      throw PEFTError("\(source.path): a mixture-of-experts model cannot be exported as GGUF yet")
    }
    guard source.metadata["tokenizer.ggml.model"] != nil else {
      throw PEFTError("\(source.path) has no tokenizer.ggml.* metadata to carry into the export")
    }
    var w = GGUFWriter(architecture: arch)
    for key in source.metadataKeys where key != "general.architecture" && key != "general.alignment" {
      if let v = source.metadata[key] { w.set(key, v) }
    }
    w.set("general.name", .string(name))
    w.set("general.file_type", .uint32(outtype.fileType))
    w.set("general.quantization_version", .uint32(2))
    let be = weights.backend, s = weights.shape
    var written = Set<String>()
    for (hfName, tensor) in try HFModelWriter.denseTensors(of: weights) {
      guard let gguf = GGUFNameMap.ggufName(forHuggingFace: hfName, architecture: arch) else {
        throw PEFTError("\(hfName) has no llama.cpp tensor name")
      }
      let shape = tensor.shape
      let values = GGUFNameMap.converterRows(try be.floats(tensor), ggufName: gguf, architecture: arch, rows: shape[0],
                                             heads: s.heads, kvHeads: s.kvHeads)
      let dims = Array(shape.reversed())
      switch storedType(gguf, dimensions: dims, outtype: outtype, tiedEmbeddings: s.tiedEmbeddings) {
      case .q8_0: try w.addTensor(gguf, dimensions: dims, type: .q8_0, bytes: GGUFQuantize.q8_0(values))
      case .q4_0: try w.addTensor(gguf, dimensions: dims, type: .q4_0, bytes: GGUFQuantize.q4_0(values))
      case let t: try w.addTensor(gguf, shape: shape, values: values, as: t)
      }
      written.insert(gguf)
    }
    // Tensors llama.cpp keeps that transformers recomputes (rope_freqs): as the source has them.
    for t in source.tensors where GGUFNameMap.huggingFaceName(for: t.name, architecture: arch) == nil
      && !written.contains(t.name) {
      let bytes = source.withRawBytes(of: t) { Array($0) }
      try w.addTensor(t.name, dimensions: t.dimensions, type: t.type, bytes: bytes)
    }
    try w.write(to: path)
  }
}
