import Foundation
import VKFModel

/// LoRA hyper-parameters with PEFT's names and defaults (`LoraConfig`): rank, alpha, dropout,
/// target modules, rsLoRA and DoRA. Decoded from the YAML / CLI config and written to
/// `adapter_config.json` by the PEFT file writer.
public struct LoRAConfig: Codable, Equatable, Sendable {
  /// Rank r of A (r, in) and B (out, r). Default 8 (PEFT's default).
  public var r: Int
  /// lora_alpha: the update is scaled by alpha/r (alpha/√r with rsLoRA). Default 16.
  public var alpha: Float
  /// lora_dropout: probability of zeroing an input of the adapter path, in [0, 1). Default 0.
  public var dropout: Float
  /// Short projection names (`q_proj` … `down_proj`) or `["all-linear"]`. Default: all seven.
  public var targetModules: [String]
  /// use_rslora: scale by alpha/√r (Kalajdzievski 2023) instead of alpha/r. Default false.
  public var useRSLoRA: Bool
  /// use_dora: weight-decomposed LoRA (Liu et al. 2024) with a trained magnitude. Default false.
  public var useDoRA: Bool
  /// target_parameters: a mixture-of-experts model's stacked expert parameters to adapt, as
  /// PEFT spells them (`mlp.experts.gate_up_proj`, `mlp.experts.down_proj`, or a suffix of
  /// those). Default none.
  public var targetParameters: [String] = []

  // Keys as PEFT's adapter_config.json spells them.
  enum CodingKeys: String, CodingKey {
    case r
    case alpha = "lora_alpha"
    case dropout = "lora_dropout"
    case targetModules = "target_modules"
    case useRSLoRA = "use_rslora"
    case useDoRA = "use_dora"
    case targetParameters = "target_parameters"
  }

  /// A config with PEFT's defaults unless given.
  public init(r: Int = 8, alpha: Float = 16, dropout: Float = 0, targetModules: [String] = LoRAConfig.allLinear,
              useRSLoRA: Bool = false, useDoRA: Bool = false, targetParameters: [String] = []) {
    self.r = r; self.alpha = alpha; self.dropout = dropout; self.targetModules = targetModules
    self.useRSLoRA = useRSLoRA; self.useDoRA = useDoRA; self.targetParameters = targetParameters
  }

  /// Decodes with a default for every missing key (a YAML file may give only `r`).
  public init(from decoder: Decoder) throws {
    let c = try decoder.container(keyedBy: CodingKeys.self)
    let d = LoRAConfig()
    r = try c.decodeIfPresent(Int.self, forKey: .r) ?? d.r
    alpha = try c.decodeIfPresent(Float.self, forKey: .alpha) ?? d.alpha
    dropout = try c.decodeIfPresent(Float.self, forKey: .dropout) ?? d.dropout
    if let one = try? c.decodeIfPresent(String.self, forKey: .targetModules) {
      targetModules = [one]  // PEFT accepts a single string ("all-linear")
    } else {
      targetModules = try c.decodeIfPresent([String].self, forKey: .targetModules) ?? d.targetModules
    }
    useRSLoRA = try c.decodeIfPresent(Bool.self, forKey: .useRSLoRA) ?? d.useRSLoRA
    useDoRA = try c.decodeIfPresent(Bool.self, forKey: .useDoRA) ?? d.useDoRA
    if let one = try? c.decodeIfPresent(String.self, forKey: .targetParameters) {
      targetParameters = [one]
    } else {
      targetParameters = try c.decodeIfPresent([String].self, forKey: .targetParameters) ?? []
    }
  }

  /// The expert parameters LoRA can adapt, in the order a sparse block registers them (PEFT
  /// nests the wrappers in this order: gate_up_proj innermost).
  public static let expertParameters = ["gate_up_proj", "down_proj"]

  /// The expert parameter kinds targeted (`expertParameters` order), from `targetParameters`
  /// spelled as PEFT matches them: `mlp.experts.<kind>`, `experts.<kind>` or `<kind>`.
  public var resolvedTargetParameters: [String] {
    Self.expertParameters.filter { kind in targetParameters.contains { Self.spellings(kind).contains($0) } }
  }

  /// The spellings of an expert parameter PEFT's suffix match accepts on these models.
  static func spellings(_ kind: String) -> [String] { [kind, "experts." + kind, "mlp.experts." + kind] }

  /// The seven Llama projections, in PEFT's (and the model's) order.
  public static let allLinear = DecoderWeights.projectionModules

  /// Phi-3's fused projections and the split ones each one stands for (PEFT targets the
  /// fused linear; the model runs its parts).
  public static let fusedModules: [(fused: String, parts: [String])] = [
    ("qkv_proj", ["q_proj", "k_proj", "v_proj"]), ("gate_up_proj", ["gate_proj", "up_proj"]),
  ]

  /// Every target name this config accepts: the seven projections and the fused two.
  public static let knownModules = allLinear + fusedModules.map(\.fused)

  /// PEFT's shorthand for every linear layer but the output head.
  public static let allLinearKeyword = "all-linear"

  /// The factor s of the update s·B·A: alpha/r, or alpha/√r with rsLoRA.
  // Matches peft LoraLayer.update_layer: scaling = lora_alpha / (sqrt(r) if use_rslora else r).
  public var scaling: Float {
    useRSLoRA ? alpha / Float(r).squareRoot() : alpha / Float(r)
  }

  /// The split projections targeted, with "all-linear" and fused names expanded,
  /// deduplicated, in `allLinear` order.
  public var resolvedTargetModules: [String] { resolvedTargetModules(among: Self.allLinear) }

  /// The targets among a model's projection names (`AdaptableWeights.loraModules`), with
  /// "all-linear" and fused names expanded, in the model's order.
  public func resolvedTargetModules(among modules: [String]) -> [String] {
    var wanted = Set(targetModules.contains(Self.allLinearKeyword) ? modules : targetModules)
    for (fused, parts) in Self.fusedModules where wanted.contains(fused) { wanted.formUnion(parts) }
    return modules.filter { wanted.contains($0) }
  }

  /// The targets as PEFT names them on this model: with fused projections (Phi-3) the fused
  /// names stand for their parts.
  public func peftTargetModules(fusedProjections: Bool, among modules: [String] = LoRAConfig.allLinear) -> [String] {
    let split = resolvedTargetModules(among: modules)
    guard fusedProjections else { return split }
    var out: [String] = []
    for name in split {
      if let f = Self.fusedModules.first(where: { $0.parts.contains(name) }) {
        if !out.contains(f.fused) { out.append(f.fused) }
      } else {
        out.append(name)
      }
    }
    return out
  }

  /// Throws unless the targets name whole projections of this model: on a fused model
  /// (Phi-3) all parts of a fused projection or none, elsewhere no fused names.
  public func checkTargets(fusedProjections: Bool) throws {
    let split = Set(resolvedTargetModules)
    for (fused, parts) in Self.fusedModules {
      if !fusedProjections, targetModules.contains(fused) {
        throw PEFTError("LoRA target module \"\(fused)\" is a fused projection (Phi-3's); this model has "
          + "\(parts.joined(separator: ", ")) instead")
      }
      let some = parts.filter { split.contains($0) }
      if fusedProjections, !some.isEmpty, some.count != parts.count {
        throw PEFTError("this model stores \(parts.joined(separator: ", ")) fused as \(fused): target \(fused) "
          + "(all of them) or none, not \(some.joined(separator: ", "))")
      }
    }
  }

  /// Throws a one-line `PEFTError` unless every field is usable.
  public func validate(modules: [String] = LoRAConfig.knownModules) throws {
    guard r > 0 else { throw PEFTError("LoRA r must be a positive integer (got \(r)); typical values are 8–64") }
    guard alpha > 0, alpha.isFinite else {
      throw PEFTError("LoRA alpha must be a positive number (got \(alpha)); a common choice is 2·r")
    }
    guard dropout >= 0, dropout < 1 else {
      throw PEFTError("LoRA dropout must be in [0, 1) (got \(dropout))")
    }
    guard !targetModules.isEmpty || !targetParameters.isEmpty else {
      throw PEFTError("LoRA target modules are empty; name some of \(Self.allLinear.joined(separator: ", ")) "
        + "or \"\(Self.allLinearKeyword)\"")
    }
    let spelled = Self.expertParameters.flatMap(Self.spellings)
    if let bad = targetParameters.first(where: { !spelled.contains($0) }) {
      throw PEFTError("unknown LoRA target parameter \"\(bad)\"; a mixture-of-experts model's experts are "
        + "mlp.experts.gate_up_proj and mlp.experts.down_proj")
    }
    if !targetParameters.isEmpty {
      // PEFT's ParamWrapper (LoRA on parameters) refuses both.
      if dropout != 0 { throw PEFTError("LoRA on expert parameters (target_parameters) does not work with lora_dropout != 0") }
      if useDoRA { throw PEFTError("LoRA on expert parameters (target_parameters) does not work with use_dora") }
    }
    let valid = Set(modules + [Self.allLinearKeyword])
    if let bad = targetModules.first(where: { !valid.contains($0) }) {
      throw PEFTError("unknown LoRA target module \"\(bad)\"; valid ones are "
        + "\(modules.joined(separator: ", ")) and \"\(Self.allLinearKeyword)\"")
    }
  }
}
