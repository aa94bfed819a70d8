// What a GRPO step logs, under TRL's metric names.
import Foundation

/// TRL GRPOTrainer's logged values of one generation batch, and their running means.
public enum GRPOMetrics {
  /// Reward and completion-length metrics of one batch of rollouts: `rewards/<name>/mean`
  /// and `/std` per reward function, `reward` and `reward_std` of the weighted sum,
  /// `completions/mean_length`, `min_length`, `max_length` (EOS counted), `clipped_ratio`
  /// (no EOS), and `mean/min/max_terminated_length` over the rows that ended (0 if none).
  /// Standard deviations are unbiased and NaN-ignoring, as TRL's `nanstd`.
  public static func rollout(rewardsPerFunction: [[Double]], names: [String], rewards: [Double],
                             masks: [CompletionMask]) -> [String: Double] {
    var m: [String: Double] = [:]
    for (k, name) in names.enumerated() {
      let column = rewardsPerFunction.map { k < $0.count ? $0[k] : .nan }
      m["rewards/\(name)/mean"] = GRPOMath.nanMean(column)
      m["rewards/\(name)/std"] = GRPOMath.nanStd(column)
    }
    m["reward"] = GRPOMath.nanMean(rewards)
    m["reward_std"] = GRPOMath.nanStd(rewards)
    let lengths = masks.map { Double($0.length) }
    m["completions/mean_length"] = lengths.reduce(0, +) / Double(max(lengths.count, 1))
    m["completions/min_length"] = lengths.min() ?? 0
    m["completions/max_length"] = lengths.max() ?? 0
    m["completions/clipped_ratio"] = Double(masks.filter(\.truncated).count) / Double(max(masks.count, 1))
    let ended = masks.filter { !$0.truncated }.map { Double($0.length) }
    m["completions/mean_terminated_length"] = ended.isEmpty ? 0 : ended.reduce(0, +) / Double(ended.count)
    m["completions/min_terminated_length"] = ended.min() ?? 0
    m["completions/max_terminated_length"] = ended.max() ?? 0
    return m
  }
}

/// Running sums of the logged GRPO values between two progress lines (each batch's values
/// weighted equally, as TRL averages its logged lists).
struct GRPOMetricSums {
  private var sums: [String: Double] = [:]
  private var counts: [String: Int] = [:]

  /// Adds one batch's values (NaN values are skipped, as TRL drops them).
  mutating func add(_ values: [String: Double]) {
    for (k, v) in values where !v.isNaN {
      sums[k, default: 0] += v
      counts[k, default: 0] += 1
    }
  }

  var isEmpty: Bool { counts.isEmpty }

  /// The means.
  var means: [String: Double] {
    Dictionary(uniqueKeysWithValues: sums.map { ($0.key, $0.value / Double(counts[$0.key] ?? 1)) })
  }
}
