// A PEFT LoRA adapter as llama.cpp's convert_lora_to_gguf.py writes it, so llama.cpp,
// llama-cpp-python, Ollama (ADAPTER) and LM Studio apply it to the base model's GGUF.
import Foundation
import VKFCore
import VKFModel

/// Writes `<base tensor>.lora_a` / `.lora_b` tensors with `general.type` adapter,
/// `adapter.type` lora and `adapter.lora.alpha`.
public enum GGUFLoRAExport {
  /// What the file says about the adapter and its base.
  public struct Settings: Sendable {
    /// The base model's GGUF architecture (`general.architecture`; llama.cpp refuses an
    /// adapter whose architecture differs).
    public var architecture: String
    /// `general.name`.
    public var name: String
    /// Query and key/value head counts (q/k rows are permuted for "llama").
    public var heads: Int, kvHeads: Int
    /// F32 (the converter's default), F16 or BF16.
    public var type: GGMLType = .f32
    public init(architecture: String, name: String, heads: Int, kvHeads: Int, type: GGMLType = .f32) {
      self.architecture = architecture; self.name = name; self.heads = heads; self.kvHeads = kvHeads; self.type = type
    }
  }

  /// The adapter's tensors as GGUF (name, HF-order shape, values): A (r, in) as `.lora_a`, B
  /// (out, r) as `.lora_b` (dimensions reversed on write, as for every tensor), B's rows
  /// permuted like the base q/k for the "llama" architecture (A is not).
  public static func tensors(_ lora: LoRAModel, _ s: Settings) throws -> [(name: String, shape: [Int], values: [Float])] {
    guard !lora.config.useDoRA else {
      throw PEFTError("a DoRA adapter has no GGUF form (llama.cpp applies plain LoRA): merge it and export the model")
    }
    guard lora.expertGroups.isEmpty else {
      throw PEFTError("LoRA on mixture-of-experts experts has no GGUF form in llama.cpp: merge it and export the model")
    }
    let be = lora.weights.backend
    var out: [(String, [Int], [Float])] = []
    // The converter's order: PEFT's saved keys sorted, i.e. the module names sorted.
    for g in lora.parameterGroups.sorted(by: { $0.module < $1.module }) {
      guard let base = GGUFNameMap.ggufName(forHuggingFace: g.module + ".weight", architecture: s.architecture) else {
        throw PEFTError("\(g.module) has no llama.cpp tensor name for architecture \(s.architecture)")
      }
      let b = GGUFNameMap.converterRows(try be.floats(g.b), ggufName: base, architecture: s.architecture,
                                        rows: g.b.shape[0], heads: s.heads, kvHeads: s.kvHeads)
      out.append((base + ".lora_a", g.a.shape, try be.floats(g.a)))
      out.append((base + ".lora_b", g.b.shape, b))
    }
    return out
  }

  /// llama.cpp scales by alpha / r: rsLoRA's alpha / √r becomes alpha' = alpha·√r.
  public static func alpha(_ c: LoRAConfig) -> Float {
    c.useRSLoRA ? c.alpha * Float(c.r).squareRoot() : c.alpha
  }

  /// Writes the adapter atomically to `path`.
  public static func write(_ lora: LoRAModel, _ s: Settings, to path: String) throws {
    guard [.f32, .f16, .bf16].contains(s.type) else {
      throw PEFTError("a GGUF LoRA adapter is stored as f32, f16 or bf16, not \(s.type.name.lowercased())")
    }
    var w = GGUFWriter(architecture: s.architecture)
    w.set("general.type", .string("adapter"))
    w.set("general.name", .string(s.name))
    w.set("adapter.type", .string("lora"))
    w.set("adapter.lora.alpha", .float32(alpha(lora.config)))
    w.set("general.quantization_version", .uint32(2))
    for t in try tensors(lora, s) { try w.addTensor(t.name, shape: t.shape, values: t.values, as: s.type) }
    try w.write(to: path)
  }
}
