import Foundation
import XCTest
@testable import VKFModel

/// Mixture-of-experts GGUF files this decoder does not run are refused with one line naming
/// the file and the key, tensor or architecture — never loaded as something else. Each case
/// is a committed fixture (MoEGGUFTests) rewritten with one change.
final class MoEGGUFRefusalTests: XCTestCase {
  /// A GGUF tensor as stored: name, ggml dimensions (innermost first), type and bytes.
  struct RawTensor {
    var name: String
    var dimensions: [Int]
    var type: GGMLType
    var bytes: [UInt8]
  }

  func test_otherMoEArchitectures_areRefusedByName() throws {
    for arch in ["olmoe", "deepseek2"] {
      let path = try rewritten("qwen3moe", architecture: arch)
      defer { try? FileManager.default.removeItem(atPath: path) }
      assertRefused(path, ["general.architecture is \"\(arch)\"", "qwen3moe"])
    }
  }

  /// A qwen2moe file must describe its shared expert: the width key, one shared expert, and
  /// its four tensors in every block.
  func test_qwen2MoE_sharedExpertMustBeComplete() throws {
    let noWidth = try rewritten("qwen2moe") { $0["qwen2moe.expert_shared_feed_forward_length"] = nil }
    defer { try? FileManager.default.removeItem(atPath: noWidth) }
    assertRefused(noWidth, ["qwen2moe.expert_shared_feed_forward_length is missing"])
    let two = try rewritten("qwen2moe") { $0["qwen2moe.expert_shared_count"] = .uint32(2) }
    defer { try? FileManager.default.removeItem(atPath: two) }
    assertRefused(two, ["qwen2moe.expert_shared_count is 2", "one shared expert"])
    let noGate = try rewritten("qwen2moe", tensors: { $0.removeAll { $0.name == "blk.1.ffn_gate_inp_shexp.weight" } })
    defer { try? FileManager.default.removeItem(atPath: noGate) }
    assertRefused(noGate, ["tensor blk.1.ffn_gate_inp_shexp.weight is missing"])
  }

  func test_sharedExperts_areRefused_byKeyAndByTensor() throws {
    let byKey = try rewritten("qwen3moe") { $0["qwen3moe.expert_shared_feed_forward_length"] = .uint32(64) }
    defer { try? FileManager.default.removeItem(atPath: byKey) }
    assertRefused(byKey, ["qwen3moe.expert_shared_feed_forward_length is 64", "shared experts"])
    let byCount = try rewritten("mixtral") { $0["llama.expert_shared_count"] = .uint32(1) }
    defer { try? FileManager.default.removeItem(atPath: byCount) }
    assertRefused(byCount, ["llama.expert_shared_count is 1"])

    let byTensor = try rewritten("qwen3moe", tensors: { tensors in
      guard let k = tensors.first(where: { $0.name == "blk.0.attn_k.weight" }) else { return }
      tensors.append(RawTensor(name: "blk.0.ffn_up_shexp.weight", dimensions: k.dimensions, type: k.type, bytes: k.bytes))
    })
    defer { try? FileManager.default.removeItem(atPath: byTensor) }
    assertRefused(byTensor, ["tensor blk.0.ffn_up_shexp.weight", "shared expert"])
  }

  /// The split layout of early Mixtral GGUFs (`blk.N.ffn_gate.E.weight`), which current
  /// llama.cpp names but no longer loads, and fused gate/up stacks are refused by tensor.
  func test_splitAndFusedExpertTensors_areRefused() throws {
    let split = try rewritten("mixtral", tensors: { tensors in
      guard let i = tensors.firstIndex(where: { $0.name == "blk.0.ffn_gate_exps.weight" }) else { return }
      let stack = tensors.remove(at: i)
      let per = stack.bytes.count / 4
      for e in 0 ..< 4 {
        tensors.append(RawTensor(name: "blk.0.ffn_gate.\(e).weight", dimensions: Array(stack.dimensions.prefix(2)),
                                 type: stack.type, bytes: Array(stack.bytes[e * per ..< (e + 1) * per])))
      }
    })
    defer { try? FileManager.default.removeItem(atPath: split) }
    assertRefused(split, ["tensor blk.0.ffn_gate.0.weight", "split layout", "convert_hf_to_gguf.py"])

    let fused = try rewritten("qwen3moe", tensors: { tensors in
      guard let i = tensors.firstIndex(where: { $0.name == "blk.1.ffn_gate_exps.weight" }) else { return }
      tensors[i].name = "blk.1.ffn_gate_up_exps.weight"
    })
    defer { try? FileManager.default.removeItem(atPath: fused) }
    assertRefused(fused, ["tensor blk.1.ffn_gate_up_exps.weight", "--fuse-gate-up-exps"])
  }

  func test_routingCountsThatCannotWork_areRefusedByKey() throws {
    let cases: [(String, String, GGUFValue, [String])] = [
      ("mixtral", "llama.expert_used_count", .uint32(5), ["llama.expert_used_count is 5", "1…4"]),
      ("mixtral", "llama.expert_count", .uint32(8),
       ["tensor blk.0.ffn_gate_inp.weight has ne [32, 4]", "expert_count (8)"]),
      ("qwen3moe", "qwen3moe.expert_feed_forward_length", .uint32(16),
       ["tensor blk.0.ffn_gate_exps.weight has ne [32, 32, 4]", "expert_feed_forward_length (16)"]),
      ("qwen3moe", "qwen3moe.expert_used_count", .array(elementType: .uint32, [.uint32(3), .uint32(2)]),
       ["qwen3moe.expert_used_count differs between layers (3, 2)"]),
      ("mixtral", "llama.expert_gating_func", .uint32(2), ["llama.expert_gating_func is 2", "softmax"]),
      ("mixtral", "llama.expert_group_count", .uint32(2), ["llama.expert_group_count is 2"]),
    ]
    for (name, key, value, fragments) in cases {
      let path = try rewritten(name) { $0[key] = value }
      defer { try? FileManager.default.removeItem(atPath: path) }
      assertRefused(path, fragments)
    }
  }

  /// Without `expert_count` a qwen3moe file is refused (llama.cpp requires it), and a llama
  /// file that still holds expert stacks is refused rather than read as a dense Llama.
  func test_missingExpertCount_isRefused() throws {
    let qwen = try rewritten("qwen3moe") { $0["qwen3moe.expert_count"] = nil }
    defer { try? FileManager.default.removeItem(atPath: qwen) }
    assertRefused(qwen, ["qwen3moe.expert_count is missing or 0"])
    let llama = try rewritten("mixtral") { $0["llama.expert_count"] = nil }
    defer { try? FileManager.default.removeItem(atPath: llama) }
    assertRefused(llama, ["tensor blk.0.ffn_gate_exps.weight holds experts", "llama.expert_count is missing or 0"])
  }

  /// A per-layer array whose values agree is llama.cpp's get_key_or_arr form of one value.
  func test_perLayerArrayOfEqualValues_loads() throws {
    let path = try rewritten("qwen3moe") {
      $0["qwen3moe.expert_used_count"] = .array(elementType: .uint32, [.uint32(3), .uint32(3)])
    }
    defer { try? FileManager.default.removeItem(atPath: path) }
    let source = try GGUFWeightSource(path: path)
    let shape = try TransformerShape(gguf: try GGUFModelFacts(file: source.file), weights: source)
    XCTAssertEqual(shape.moe?.topK, 3)
  }

  // MARK: - Helpers

  /// Fixture `name`'s f32 file with its metadata and tensors edited, written to a temporary
  /// path (keys under the old architecture's prefix follow a new `architecture`).
  private func rewritten(_ name: String, architecture: String? = nil,
                         metadata: (inout [String: GGUFValue]) -> Void = { _ in },
                         tensors: (inout [RawTensor]) -> Void = { _ in }) throws -> String {
    let file = try GGUFFile(path: MoEGGUFTests.fixture(name, "f32").path)
    let old = try XCTUnwrap(file.architecture), arch = architecture ?? old
    var keys = file.metadataKeys.filter { $0 != "general.architecture" }
    var values = file.metadata
    values["general.architecture"] = nil  // the writer sets it first
    if arch != old {
      for (i, key) in keys.enumerated() where key.hasPrefix(old + ".") {
        let renamed = arch + key.dropFirst(old.count)
        values[renamed] = values.removeValue(forKey: key)
        keys[i] = renamed
      }
    }
    metadata(&values)
    var raw = file.tensors.map { info in
      RawTensor(name: info.name, dimensions: info.dimensions, type: info.type,
                bytes: file.withRawBytes(of: info) { Array($0) })
    }
    tensors(&raw)
    var writer = GGUFWriter(architecture: arch)
    for key in keys { if let value = values[key] { writer.set(key, value) } }
    for (key, value) in values.sorted(by: { $0.key < $1.key }) where !keys.contains(key) { writer.set(key, value) }
    for t in raw { try writer.addTensor(t.name, dimensions: t.dimensions, type: t.type, bytes: t.bytes) }
    let path = FileManager.default.temporaryDirectory.appendingPathComponent("vkf-\(name)-\(UUID()).gguf").path
    try writer.write(to: path)
    return path
  }

  /// Opening `path` as a decoder fails with one line that starts with the path and contains
  /// every fragment.
  private func assertRefused(_ path: String, _ fragments: [String], line: UInt = #line) {
    do {
      let source = try GGUFWeightSource(path: path)
      _ = try TransformerShape(gguf: try GGUFModelFacts(file: source.file), weights: source)
      XCTFail("\(fragments.first ?? ""): the file loaded", line: line)
    } catch {
      let text = "\(error)"
      XCTAssertTrue(text.hasPrefix(path + ": "), text, line: line)
      XCTAssertFalse(text.contains("\n"), text, line: line)
      for fragment in fragments where !text.contains(fragment) {
        XCTFail("\(text)\n  lacks: \(fragment)", line: line)
      }
    }
  }
}
