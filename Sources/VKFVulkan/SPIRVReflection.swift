/// What a compiled shader says about its storage buffers, read from the SPIR-V itself so the
/// dependency tracker never trusts a hand-written list: a binding the shader declares
/// `readonly` (NonWritable on the variable or on every member of its block) is only read.
enum SPIRVReflection {
  private static let opTypeStruct: UInt32 = 30, opTypePointer: UInt32 = 32, opVariable: UInt32 = 59
  private static let opDecorate: UInt32 = 71, opMemberDecorate: UInt32 = 72
  private static let decorationNonWritable: UInt32 = 24, decorationBinding: UInt32 = 33
  private static let decorationDescriptorSet: UInt32 = 34

  /// Bindings of descriptor set 0 the shader may write. Bindings it does not declare are
  /// absent (never accessed); malformed SPIR-V gives every binding in `0..<fallbackCount`
  /// (writable is the safe assumption: it only costs a barrier).
  static func writableBindings(_ words: [UInt32], fallbackCount: Int) -> Set<Int> {
    var binding: [UInt32: Int] = [:], set: [UInt32: UInt32] = [:]
    var nonWritableVariables = Set<UInt32>()
    var nonWritableMembers: [UInt32: Set<UInt32>] = [:]
    var memberCount: [UInt32: Int] = [:]
    var pointee: [UInt32: UInt32] = [:]
    var variableType: [UInt32: UInt32] = [:]
    guard words.count > 5, words[0] == 0x0723_0203 else { return Set(0..<fallbackCount) }
    var i = 5
    while i < words.count {
      let count = Int(words[i] >> 16), op = words[i] & 0xFFFF
      guard count > 0, i + count <= words.count else { return Set(0..<fallbackCount) }
      let w = words[i..<(i + count)].map { $0 }
      switch op {
      case opDecorate where count >= 3:
        switch w[2] {
        case decorationBinding where count >= 4: binding[w[1]] = Int(w[3])
        case decorationDescriptorSet where count >= 4: set[w[1]] = w[3]
        case decorationNonWritable: nonWritableVariables.insert(w[1])
        default: break
        }
      case opMemberDecorate where count >= 4 && w[3] == decorationNonWritable:
        nonWritableMembers[w[1], default: []].insert(w[2])
      case opTypeStruct: memberCount[w[1]] = count - 2
      case opTypePointer where count >= 4: pointee[w[1]] = w[3]
      case opVariable where count >= 4: variableType[w[2]] = w[1]
      default: break
      }
      i += count
    }
    var out = Set<Int>()
    for (variable, b) in binding where (set[variable] ?? 0) == 0 {
      if nonWritableVariables.contains(variable) { continue }
      if let ptr = variableType[variable], let block = pointee[ptr], let n = memberCount[block], n > 0,
         (nonWritableMembers[block]?.count ?? 0) == n {
        continue
      }
      out.insert(b)
    }
    return out
  }
}
