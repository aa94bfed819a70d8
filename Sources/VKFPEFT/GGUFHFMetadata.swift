// The GGUF metadata llama.cpp's convert_hf_to_gguf.py writes for a Hugging Face llama directory
// (hyper-parameters from config.json; tokenizer.ggml.* from tokenizer.json, tokenizer_config.json
// and the chat template), so `vkfinetune export --format gguf` can start from a HF model.
import Foundation
import VKFModel
import VKFTokenizer

/// Builds a llama model's GGUF metadata from its Hugging Face files, key for key as the
/// converter does (its LlamaModel with a byte-level BPE vocabulary). The converter reads
/// config.json through transformers' LlamaConfig, so a key the file leaves out has that
/// class's default (max_position_embeddings 2048, num_key_value_heads = heads, rope_theta
/// 10000, rms_norm_eps 1e-6, head_dim = hidden / heads).
public enum GGUFHFMetadata {
  /// The metadata in the converter's order and the tensors it generates (rope_freqs).
  public struct Result {
    public var metadata: [(String, GGUFValue)]
    public var extraTensors: [GGUFModelExport.ExtraTensor]
  }

  /// GGUF token types (llama.cpp `llama_token_type`).
  static let normal: Int32 = 1, unused: Int32 = 5, control: Int32 = 3, userDefined: Int32 = 4

  /// The metadata of the llama model in `directory` (config.json, tokenizer.json,
  /// tokenizer_config.json, chat_template.jinja / .json), `tokenizer` its loaded tokenizer.
  public static func build(directory: URL, architecture arch: String, tokenizer: Tokenizer) throws -> Result {
    let configURL = directory.appendingPathComponent("config.json")
    guard let config = try JSONSideFile.object(at: configURL) else {
      throw PEFTError("\(configURL.path): missing; a Hugging Face model directory needs its config.json")
    }
    var m = [(String, GGUFValue)]()
    func set(_ key: String, _ value: GGUFValue) {
      if let i = m.firstIndex(where: { $0.0 == key }) { m[i].1 = value } else { m.append((key, value)) }
    }
    func int(_ keys: [String]) throws -> Int? {
      for key in keys {
        guard let v = config[key] else { continue }
        guard let n = v as? Int, n >= 0, n <= Int(UInt32.max) else {
          throw PEFTError("\(configURL.path): \(key) must be a non-negative integer, got \(v)")
        }
        return n
      }
      return nil
    }
    func float(_ v: Any?, _ key: String) throws -> Float? {
      guard let v else { return nil }
      guard let d = (v as? NSNumber)?.doubleValue, !(v is Bool) else {
        throw PEFTError("\(configURL.path): \(key) must be a number, got \(v)")
      }
      return Float(d)
    }
    let p = arch + "."
    set("general.type", .string("model"))
    set("general.name", .string(""))  // its place; the writer fills it in
    guard let layers = try int(["n_layers", "num_hidden_layers", "n_layer", "num_layers"]) else {
      throw PEFTError("\(configURL.path): num_hidden_layers is missing")
    }
    set(p + "block_count", .uint32(UInt32(layers)))
    let context = try int(["max_position_embeddings", "n_ctx", "n_positions", "max_length", "max_sequence_length", "model_max_length"])
    set(p + "context_length", .uint32(UInt32(context ?? 2048)))
    guard let hidden = try int(["hidden_size", "n_embd", "dim"]), let heads = try int(["num_attention_heads", "n_head", "n_heads"]),
          heads > 0 else {
      throw PEFTError("\(configURL.path): hidden_size and num_attention_heads are needed")
    }
    set(p + "embedding_length", .uint32(UInt32(hidden)))
    if let n = try int(["intermediate_size", "n_inner", "hidden_dim"]) { set(p + "feed_forward_length", .uint32(UInt32(n))) }
    set(p + "attention.head_count", .uint32(UInt32(heads)))
    set(p + "attention.head_count_kv", .uint32(UInt32(try int(["num_key_value_heads", "n_kv_heads"]) ?? heads)))

    // RoPE: rope_parameters (transformers ≥ 4.56) or rope_scaling, with rope_theta mirrored in.
    var rope = (config["rope_parameters"] as? [String: Any]) ?? (config["rope_scaling"] as? [String: Any]) ?? [:]
    if rope["rope_theta"] == nil, let theta = config["rope_theta"] ?? config["rotary_emb_base"] { rope["rope_theta"] = theta }
    if rope["rope_type"] == nil, let type = rope["type"] { rope["rope_type"] = type }
    if rope["original_max_position_embeddings"] == nil, let n = config["original_max_position_embeddings"] {
      rope["original_max_position_embeddings"] = n
    }
    let headDim = try int(["head_dim"]) ?? hidden / heads
    var extra = [GGUFModelExport.ExtraTensor]()
    if let type = rope["rope_type"] as? String {
      let factor = try float(rope["factor"], "rope factor")
      switch type.lowercased() {
      case "linear" where factor != nil:
        set(p + "rope.scaling.type", .string("linear"))
        set(p + "rope.scaling.factor", .float32(factor!))
      case "llama3":
        extra.append(try ropeFreqs(rope, headDim: headDim, path: configURL.path))
      case "default", "linear":
        break
      default:
        throw PEFTError("\(configURL.path): rope type \(type) is not exported to GGUF here (default, linear and llama3 are)")
      }
    }
    set(p + "rope.freq_base", .float32(try float(rope["rope_theta"], "rope_theta") ?? 10000))
    let eps = try float(config["rms_norm_eps"] ?? config["norm_eps"], "rms_norm_eps") ?? 1e-6
    set(p + "attention.layer_norm_rms_epsilon", .float32(eps))
    set(p + "attention.key_length", .uint32(UInt32(headDim)))
    set(p + "attention.value_length", .uint32(UInt32(headDim)))
    set("general.file_type", .uint32(0))
    let vocab = try int(["vocab_size"]) ?? tokenizer.vocabularySize
    set(p + "vocab_size", .uint32(UInt32(vocab)))
    set(p + "rope.dimension_count", .uint32(UInt32(headDim)))
    set("general.quantization_version", .uint32(2))
    for (key, value) in try GGUFHFTokenizer.entries(directory: directory, tokenizer: tokenizer, vocabularySize: vocab,
                                                    config: config) {
      set(key, value)
    }
    // The converter's LlamaModel: a 49152-token vocabulary (SmolLM, Granite) adds no BOS.
    if vocab == 49152 { set("tokenizer.ggml.add_bos_token", .bool(false)) }
    return Result(metadata: m, extraTensors: extra)
  }

  /// llama.cpp's rope_freqs for llama3 RoPE scaling: per frequency pair the factor dividing
  /// its angle — 1 above the high-frequency cut, `factor` below the low one, and a smooth
  /// blend between — in f32 as the converter computes it (torch f32 tensor arithmetic).
  static func ropeFreqs(_ rope: [String: Any], headDim: Int, path: String) throws -> GGUFModelExport.ExtraTensor {
    func number(_ key: String, _ fallback: Double) throws -> Double {
      guard let v = rope[key] else { return fallback }
      guard let d = (v as? NSNumber)?.doubleValue else { throw PEFTError("\(path): rope \(key) must be a number, got \(v)") }
      return d
    }
    let base = Float(try number("rope_theta", 10000))
    let factor = try number("factor", 8), low = try number("low_freq_factor", 1), high = try number("high_freq_factor", 4)
    let oldContext = try number("original_max_position_embeddings", 8192)
    let lowWavelen = oldContext / low, highWavelen = oldContext / high
    var values = [Float]()
    for i in stride(from: 0, to: headDim, by: 2) {
      let freq: Float = 1 / Foundation.pow(base, Float(i) / Float(headDim))
      let wavelen = Float(2 * Double.pi) / freq
      if Double(wavelen) < highWavelen {
        values.append(1)
      } else if Double(wavelen) > lowWavelen {
        values.append(Float(factor))
      } else {
        let smooth: Float = (Float(oldContext) / wavelen - Float(low)) / Float(high - low)
        values.append(1 / ((1 - smooth) / Float(factor) + smooth))
      }
    }
    let bytes = values.flatMap { v in withUnsafeBytes(of: v.bitPattern.littleEndian) { Array($0) } }
    return GGUFModelExport.ExtraTensor(name: "rope_freqs.weight", dimensions: [values.count], type: .f32, bytes: bytes)
  }
}
