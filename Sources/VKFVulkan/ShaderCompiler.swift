import CGlslang
import Foundation
import VKFCore

/// GLSL → SPIR-V with glslang, after the host-side preprocessing every shader relies on:
/// `#include "common/x.glsl"` by plain text inclusion (each file once) and `#define`s
/// inserted right after `#version` (see Shaders/README.md and tools/check-shaders).
enum ShaderCompiler {
  /// glslang needs one process-wide initialisation; a static let runs it exactly once.
  private static let initialized: Bool = glslang_initialize_process() != 0

  /// Source of `name` ("fill.comp", "common/push.glsl"): from `$VKF_SHADER_DIR` when set
  /// (edit-and-rerun during development), else the embedded copy.
  static func source(_ name: String) throws -> String {
    if let dir = ProcessInfo.processInfo.environment["VKF_SHADER_DIR"], !dir.isEmpty {
      let url = URL(fileURLWithPath: dir).appendingPathComponent(name)
      if let s = try? String(contentsOf: url, encoding: .utf8) { return s }
    }
    guard let s = ShaderSources.files[name] else {
      throw VKFError.shaderCompile(name: name, log: "no such shader in Shaders/ "
        + "(run tools/embed-shaders after adding one)")
    }
    return s
  }

  /// `name`'s source with includes resolved and `defines` inserted after `#version`.
  static func preprocess(_ name: String, defines: [String: String]) throws -> String {
    var seen = Set<String>()
    let text = try resolveIncludes(try source(name), name: name, seen: &seen)
    return insertDefines(text, defines)
  }

  static func resolveIncludes(_ text: String, name: String, seen: inout Set<String>) throws -> String {
    var out: [Substring] = []
    for line in text.split(separator: "\n", omittingEmptySubsequences: false) {
      let trimmed = line.drop { $0 == " " || $0 == "\t" }
      guard trimmed.hasPrefix("#include") else { out.append(line); continue }
      let parts = trimmed.split(separator: "\"")
      guard parts.count >= 2 else {
        throw VKFError.shaderCompile(name: name, log: "malformed include: \(line)")
      }
      let rel = String(parts[1])
      if seen.insert(rel).inserted {
        out.append(Substring(try resolveIncludes(try source(rel), name: rel, seen: &seen)))
      }
    }
    return out.joined(separator: "\n")
  }

  static func insertDefines(_ text: String, _ defines: [String: String]) -> String {
    guard !defines.isEmpty else { return text }
    var lines = text.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
    let at = (lines.firstIndex { $0.hasPrefix("#version") } ?? -1) + 1
    lines.insert(contentsOf: defines.sorted { $0.key < $1.key }.map { "#define \($0.key) \($0.value)" },
                 at: at)
    return lines.joined(separator: "\n")
  }

  /// Compiles preprocessed GLSL to SPIR-V words (Vulkan 1.2, SPIR-V 1.5).
  static func compile(_ source: String, name: String) throws -> [UInt32] {
    guard initialized else {
      throw VKFError.shaderCompile(name: name, log: "glslang_initialize_process failed")
    }
    return try source.withCString { code -> [UInt32] in
      var input = glslang_input_t()
      input.language = GLSLANG_SOURCE_GLSL
      input.stage = GLSLANG_STAGE_COMPUTE
      input.client = GLSLANG_CLIENT_VULKAN
      input.client_version = GLSLANG_TARGET_VULKAN_1_2
      input.target_language = GLSLANG_TARGET_SPV
      input.target_language_version = GLSLANG_TARGET_SPV_1_5
      input.code = code
      input.default_version = 450
      input.default_profile = GLSLANG_NO_PROFILE
      input.force_default_version_and_profile = 0
      input.forward_compatible = 0
      input.messages = glslang_messages_t(GLSLANG_MSG_SPV_RULES_BIT.rawValue
                                          | GLSLANG_MSG_VULKAN_RULES_BIT.rawValue)
      input.resource = glslang_default_resource()

      guard let shader = glslang_shader_create(&input) else {
        throw VKFError.shaderCompile(name: name, log: "glslang_shader_create failed")
      }
      defer { glslang_shader_delete(shader) }
      func log(_ p: UnsafePointer<CChar>?) -> String { p.map { String(cString: $0) } ?? "" }
      guard glslang_shader_preprocess(shader, &input) != 0 else {
        throw VKFError.shaderCompile(name: name, log: log(glslang_shader_get_info_log(shader)))
      }
      guard glslang_shader_parse(shader, &input) != 0 else {
        throw VKFError.shaderCompile(name: name, log: log(glslang_shader_get_info_log(shader)))
      }
      guard let program = glslang_program_create() else {
        throw VKFError.shaderCompile(name: name, log: "glslang_program_create failed")
      }
      defer { glslang_program_delete(program) }
      glslang_program_add_shader(program, shader)
      guard glslang_program_link(program, Int32(input.messages.rawValue)) != 0 else {
        throw VKFError.shaderCompile(name: name, log: log(glslang_program_get_info_log(program)))
      }
      glslang_program_SPIRV_generate(program, GLSLANG_STAGE_COMPUTE)
      let count = glslang_program_SPIRV_get_size(program)
      guard count > 0, let ptr = glslang_program_SPIRV_get_ptr(program) else {
        throw VKFError.shaderCompile(name: name, log: "no SPIR-V: "
          + log(glslang_program_SPIRV_get_messages(program)))
      }
      return Array(UnsafeBufferPointer(start: ptr, count: count))
    }
  }
}
