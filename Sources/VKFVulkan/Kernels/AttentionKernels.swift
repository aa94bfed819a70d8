import VKFCore

// Fused causal attention (attention.comp, attention_back_dq.comp, attention_back_dkdv.comp).

/// Push constants of the three attention kernels (after the 8 binding offsets).
struct AttentionPush {
  var batch: UInt32
  var heads: UInt32
  var kvHeads: UInt32
  var tokens: UInt32
  var tiles: UInt32
  var scale: Float
  /// Sliding window (keys i − window < j ≤ i), 0 = none.
  var window: UInt32
  /// Score soft-capping (softcap·tanh(s / softcap)), 0 = none.
  var softcap: Float
  /// 1: keys j ≤ i only; 0: every key (encoders).
  var causal: UInt32
  /// 1: the key-lengths binding holds each batch row's real key count.
  var useKeyLengths: UInt32
}

extension VulkanBackend {
  /// Invocations per attention workgroup (ATT_WG in common/attention.glsl).
  static let attentionWorkgroup = 64

  /// The tile edge (query rows and keys per tile) for head size `headDim`: the largest of
  /// 32, 16, 8, 4 whose tiles fit the device's shared memory in the hungriest kernel
  /// (attention_back_dkdv: four (tile, HS) tiles, two (tile, tile) tiles, two rows).
  func attentionTile(headDim: Int, op: Op) throws -> Int {
    for tile in [32, 16, 8, 4] {
      let bytes = 4 * (4 * tile * headDim + 2 * tile * tile + 2 * tile)
      if bytes <= capabilities.maxSharedMemoryBytes { return tile }
    }
    throw VKFError.unsupported(op: op.rawValue, detail: "head size \(headDim) needs more shared memory than "
      + "the device's \(capabilities.maxSharedMemoryBytes) bytes")
  }

  private func attentionDefines(_ headDim: Int, tile: Int) -> [String: String] {
    ["HEAD_DIM": String(headDim), "ATT_TILE": String(tile)]
  }

  /// Batches per dispatch, so every binding fits (a batch's q slab is the largest).
  private func attentionChunks(_ g: AttentionShape, op: Op) throws -> [Range<Int>] {
    try rowChunks(rows: g.batch, rowBytes: g.heads * g.tokens * g.headDim * 4, op: op)
  }

  private func attentionPush(_ g: AttentionShape, batch: Int, tile: Int, scale: Float, mask: AttentionMask,
                             op: Op) throws -> AttentionPush {
    return AttentionPush(batch: try shaderUInt(batch, op), heads: try shaderUInt(g.heads, op),
                         kvHeads: try shaderUInt(g.kvHeads, op), tokens: try shaderUInt(g.tokens, op),
                         tiles: try shaderUInt((g.tokens + tile - 1) / tile, op), scale: scale,
                         window: try shaderUInt(mask.window, op), softcap: mask.softcap,
                         causal: mask.causal ? 1 : 0, useKeyLengths: mask.keyLengths == nil ? 0 : 1)
  }

  /// attention.comp: out and lse of causal attention (within `window` keys when > 0), key
  /// tile by key tile.
  public func attention(q: Tensor, k: Tensor, v: Tensor, scale: Float, mask: AttentionMask,
                        into out: Tensor, lse: Tensor) throws {
    try checkOwnership(.attention, q, k, v, out, lse, mask.keyLengths)
    let op = Op.attention
    let g = try ShapeCheck.attention(op, q: q, k: k, v: v, out: out, lse: lse)
    try ShapeCheck.attentionMask(op, mask, batch: g.batch)
    guard g.batch > 0, g.tokens > 0 else { return }
    let tile = try attentionTile(headDim: g.headDim, op: op)
    let (qRow, kvRow, lseRow) = (g.heads * g.tokens * g.headDim, g.kvHeads * g.tokens * g.headDim, g.heads * g.tokens)
    for r in try attentionChunks(g, op: op) {
      let push = try attentionPush(g, batch: r.count, tile: tile, scale: scale, mask: mask, op: op)
      // Without key lengths the binding is unread: q fills it.
      let lengths = try mask.keyLengths.map { try $0.rowSlice(r, rowLength: 1) } ?? q
      try dispatch("attention", defines: attentionDefines(g.headDim, tile: tile),
                   specialization: [UInt32(Self.attentionWorkgroup), 1, 1],
                   bindings: [try q.rowSlice(r, rowLength: qRow), try k.rowSlice(r, rowLength: kvRow),
                              try v.rowSlice(r, rowLength: kvRow), try out.rowSlice(r, rowLength: qRow),
                              try lse.rowSlice(r, rowLength: lseRow), lengths],
                   push: push, groups: try spreadGroups(r.count * g.heads * Int(push.tiles), op: op))
    }
  }

  /// attention_back_stats.comp, attention_back_dq.comp, attention_back_dkdv.comp: delta (and
  /// lse beside it), dq, then dk and dv.
  public func attentionBackward(_ dOut: Tensor, q: Tensor, k: Tensor, v: Tensor, out: Tensor, lse: Tensor,
                                scale: Float, mask: AttentionMask, delta: Tensor, dq: Tensor,
                                dk: Tensor, dv: Tensor) throws {
    try checkOwnership(.attentionBackward, dOut, q, k, v, out, lse, delta, dq, dk, dv, mask.keyLengths)
    let op = Op.attentionBackward
    let g = try ShapeCheck.attentionBackward(dOut: dOut, q: q, k: k, v: v, out: out, lse: lse, delta: delta,
                                             dq: dq, dk: dk, dv: dv)
    try ShapeCheck.attentionMask(op, mask, batch: g.batch)
    guard g.batch > 0, g.tokens > 0 else { return }
    let tile = try attentionTile(headDim: g.headDim, op: op)
    let (qRow, kvRow, lseRow) = (g.heads * g.tokens * g.headDim, g.kvHeads * g.tokens * g.headDim, g.heads * g.tokens)
    let defines = attentionDefines(g.headDim, tile: tile)
    for r in try attentionChunks(g, op: op) {
      let push = try attentionPush(g, batch: r.count, tile: tile, scale: scale, mask: mask, op: op)
      // Without key lengths the binding is unread: q fills it.
      let lengths = try mask.keyLengths.map { try $0.rowSlice(r, rowLength: 1) } ?? q
      func rows(_ t: Tensor, _ length: Int) throws -> Tensor { try t.rowSlice(r, rowLength: length) }
      // lse and delta side by side (one binding for both in the gradient passes).
      let statRows = r.count * lseRow
      let stats = try scratch(count: 2 * statRows)
      try dispatch("attention_back_stats", defines: defines, specialization: [UInt32(Self.attentionWorkgroup), 1, 1],
                   bindings: [try rows(dOut, qRow), try rows(out, qRow), try rows(lse, lseRow), try rows(delta, lseRow),
                              stats],
                   push: push, groups: try spreadGroups((statRows + Self.attentionWorkgroup - 1) / Self.attentionWorkgroup,
                                                        op: op))
      try dispatch("attention_back_dq", defines: defines, specialization: [UInt32(Self.attentionWorkgroup), 1, 1],
                   bindings: [try rows(dOut, qRow), try rows(q, qRow), try rows(k, kvRow), try rows(v, kvRow),
                              stats, try rows(dq, qRow), lengths],
                   push: push, groups: try spreadGroups(r.count * g.heads * Int(push.tiles), op: op))
      try dispatch("attention_back_dkdv", defines: defines, specialization: [UInt32(Self.attentionWorkgroup), 1, 1],
                   bindings: [try rows(dOut, qRow), try rows(q, qRow), try rows(k, kvRow), try rows(v, kvRow),
                              stats, try rows(dk, kvRow), try rows(dv, kvRow), lengths],
                   push: push, groups: try spreadGroups(r.count * g.kvHeads * Int(push.tiles), op: op))
    }
  }
}
