import CVulkan

/// One memory access of a recorded command: a byte range of a VkBuffer, read or written
/// (a written binding may also be read; it conflicts both ways).
struct BufferAccess {
  /// The VkBuffer's handle as an integer key.
  let buffer: UInt
  /// Bytes touched, in buffer coordinates (4-byte aligned: shaders access whole words).
  let range: Range<Int>
  let writes: Bool

  init(_ buffer: VkBuffer, _ range: Range<Int>, writes: Bool) {
    self.buffer = UInt(bitPattern: Int(bitPattern: UnsafeRawPointer(buffer)))
    self.range = range
    self.writes = writes
  }
}

/// Groups commands into levels so that a barrier is needed only between levels: a command
/// goes one level after the latest earlier command it conflicts with (it reads or writes
/// what that one wrote, or writes what that one read), and level 0 when it conflicts with
/// none. Commands of one level touch disjoint data (or only read shared data), so they run
/// without barriers between them — the q/k/v LoRA branches overlap, a chain of dependent
/// kernels gets one barrier per link. Program order is kept among conflicting commands, so
/// the results are those of running the commands one by one.
///
/// Per buffer, the bytes touched so far are kept as sorted disjoint segments with the
/// highest level that read and wrote each; a query visits only the overlapping segments.
struct DependencyLevels {
  private struct Segment {
    var lo: Int, hi: Int
    /// Highest level that wrote / read these bytes (−1: none).
    var written: Int, read: Int
  }
  private var segments: [UInt: [Segment]] = [:]
  /// Levels handed out so far (the highest level + 1).
  private(set) var levelCount = 0

  /// How commands are placed.
  enum Mode {
    /// After the commands they conflict with (the engine's mode).
    case tracked
    /// Each in a level of its own after every earlier command: a barrier before each
    /// command (`VKF_FULL_BARRIERS=1`, for measuring the old engine and ruling the tracker
    /// out when results look wrong).
    case serial
    /// All in level 0, no barriers at all: only tests use it, to prove that the validation
    /// layer's synchronization checks see a missing barrier.
    case unsynchronized
  }

  /// The level of a command with these accesses, recording them at that level.
  mutating func place(_ accesses: [BufferAccess], mode: Mode = .tracked) -> Int {
    if mode == .unsynchronized {
      levelCount = max(levelCount, 1)
      return 0
    }
    var level = mode == .serial ? levelCount : 0
    for a in accesses where !a.range.isEmpty {
      guard let segs = segments[a.buffer] else { continue }
      var i = firstOverlap(segs, a.range.lowerBound)
      while i < segs.count, segs[i].lo < a.range.upperBound {
        level = max(level, segs[i].written + 1)
        if a.writes { level = max(level, segs[i].read + 1) }
        i += 1
      }
    }
    for a in accesses where !a.range.isEmpty { mark(a, level: level) }
    levelCount = max(levelCount, level + 1)
    return level
  }

  /// Index of the first segment whose end lies past `offset`.
  private func firstOverlap(_ segs: [Segment], _ offset: Int) -> Int {
    var lo = 0, hi = segs.count
    while lo < hi {
      let mid = (lo + hi) / 2
      if segs[mid].hi <= offset { lo = mid + 1 } else { hi = mid }
    }
    return lo
  }

  /// Raises the written / read level of every byte of `a` to `level`, splitting segments at
  /// the range's ends and filling gaps.
  private mutating func mark(_ a: BufferAccess, level: Int) {
    var segs = segments[a.buffer] ?? []
    let lo = a.range.lowerBound, hi = a.range.upperBound
    var i = firstOverlap(segs, lo)
    // Split a segment straddling `lo`.
    if i < segs.count, segs[i].lo < lo {
      var left = segs[i]; left.hi = lo
      segs[i].lo = lo
      segs.insert(left, at: i)
      i += 1
    }
    var cursor = lo
    var out: [Segment] = []
    var j = i
    while j < segs.count, segs[j].lo < hi {
      var s = segs[j]
      if s.lo > cursor { out.append(Segment(lo: cursor, hi: s.lo, written: -1, read: -1)) }
      if s.hi > hi {
        // Split a segment straddling `hi`: its right part keeps the old levels.
        var right = s; right.lo = hi
        s.hi = hi
        segs.insert(right, at: j + 1)
      }
      out.append(s)
      cursor = s.hi
      j += 1
    }
    if cursor < hi { out.append(Segment(lo: cursor, hi: hi, written: -1, read: -1)) }
    for k in out.indices {
      if a.writes { out[k].written = max(out[k].written, level) } else { out[k].read = max(out[k].read, level) }
    }
    segs.replaceSubrange(i..<j, with: out)
    segments[a.buffer] = segs
  }
}
