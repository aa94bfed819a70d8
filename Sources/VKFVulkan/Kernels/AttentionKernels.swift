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

  private func attentionPush(_ g: AttentionShape, batch: Int, tile: Int, scale: Float, window: Int,
                             softcap: Float, op: Op) throws -> AttentionPush {
    try ShapeCheck.window(op, window)
    try ShapeCheck.softcap(op, softcap)
    return AttentionPush(batch: try shaderUInt(batch, op), heads: try shaderUInt(g.heads, op),
                         kvHeads: try shaderUInt(g.kvHeads, op), tokens: try shaderUInt(g.tokens, op),
                         tiles: try shaderUInt((g.tokens + tile - 1) / tile, op), scale: scale,
                         window: try shaderUInt(window, op), softcap: softcap)
  }

  /// attention.comp: out and lse of causal attention (within `window` keys when > 0), key
  /// tile by key tile.
  public func attention(q: Tensor, k: Tensor, v: Tensor, scale: Float, window: Int, softcap: Float,
                        into out: Tensor, lse: Tensor) throws {
    try checkOwnership(.attention, q, k, v, out, lse)
    let op = Op.attention
    let g = try ShapeCheck.attention(op, q: q, k: k, v: v, out: out, lse: lse)
    guard g.batch > 0, g.tokens > 0 else { return }
    let tile = try attentionTile(headDim: g.headDim, op: op)
    let (qRow, kvRow, lseRow) = (g.heads * g.tokens * g.headDim, g.kvHeads * g.tokens * g.headDim, g.heads * g.tokens)
    for r in try attentionChunks(g, op: op) {
      let push = try attentionPush(g, batch: r.count, tile: tile, scale: scale, window: window,
                                   softcap: softcap, op: op)
      try dispatch("attention", defines: attentionDefines(g.headDim, tile: tile),
                   specialization: [UInt32(Self.attentionWorkgroup), 1, 1],
                   bindings: [try q.rowSlice(r, rowLength: qRow), try k.rowSlice(r, rowLength: kvRow),
                              try v.rowSlice(r, rowLength: kvRow), try out.rowSlice(r, rowLength: qRow),
                              try lse.rowSlice(r, rowLength: lseRow)],
                   push: push, groups: try spreadGroups(r.count * g.heads * Int(push.tiles), op: op))
    }
  }

  /// attention_back_dq.comp then attention_back_dkdv.comp: delta and dq, then dk and dv.
  public func attentionBackward(_ dOut: Tensor, q: Tensor, k: Tensor, v: Tensor, out: Tensor, lse: Tensor,
                                scale: Float, window: Int, softcap: Float, delta: Tensor, dq: Tensor,
                                dk: Tensor, dv: Tensor) throws {
    try checkOwnership(.attentionBackward, dOut, q, k, v, out, lse, delta, dq, dk, dv)
    let op = Op.attentionBackward
    let g = try ShapeCheck.attentionBackward(dOut: dOut, q: q, k: k, v: v, out: out, lse: lse, delta: delta,
                                             dq: dq, dk: dk, dv: dv)
    guard g.batch > 0, g.tokens > 0 else { return }
    let tile = try attentionTile(headDim: g.headDim, op: op)
    let (qRow, kvRow, lseRow) = (g.heads * g.tokens * g.headDim, g.kvHeads * g.tokens * g.headDim, g.heads * g.tokens)
    let defines = attentionDefines(g.headDim, tile: tile)
    for r in try attentionChunks(g, op: op) {
      let push = try attentionPush(g, batch: r.count, tile: tile, scale: scale, window: window,
                                   softcap: softcap, op: op)
      func rows(_ t: Tensor, _ length: Int) throws -> Tensor { try t.rowSlice(r, rowLength: length) }
      try dispatch("attention_back_dq", defines: defines, specialization: [UInt32(Self.attentionWorkgroup), 1, 1],
                   bindings: [try rows(dOut, qRow), try rows(q, qRow), try rows(k, kvRow), try rows(v, kvRow),
                              try rows(out, qRow), try rows(lse, lseRow), try rows(delta, lseRow), try rows(dq, qRow)],
                   push: push, groups: try spreadGroups(r.count * g.heads * Int(push.tiles), op: op))
      try dispatch("attention_back_dkdv", defines: defines, specialization: [UInt32(Self.attentionWorkgroup), 1, 1],
                   bindings: [try rows(dOut, qRow), try rows(q, qRow), try rows(k, kvRow), try rows(v, kvRow),
                              try rows(lse, lseRow), try rows(delta, lseRow), try rows(dk, kvRow), try rows(dv, kvRow)],
                   push: push, groups: try spreadGroups(r.count * g.kvHeads * Int(push.tiles), op: op))
    }
  }
}
