// The tiles and the probability / score-gradient step shared by the two backward kernels
// of fused attention (attention_back_dq.comp, attention_back_dkdv.comp); include after
// common/attention.glsl.
//
// qs, dos: a query tile's q and dOut rows; ks, vs: a key tile's k and v rows; row_lse,
// row_delta: the query rows' log-sum-exp and delta (rowsum(dOut ⊙ out)).

shared float qs[ATT_TILE][HEAD_DIM];
shared float dos[ATT_TILE][HEAD_DIM];
shared float ks[ATT_TILE][HEAD_DIM];
shared float vs[ATT_TILE][HEAD_DIM];
shared float ps[ATT_TILE][ATT_TILE];
shared float ds[ATT_TILE][ATT_TILE];
shared float row_lse[ATT_TILE], row_delta[ATT_TILE];

// For the query tile at q0 and the key tile at k0: ps = p_ij = exp(scale·q_i·k_j − lse_i) and
// ds = scale · p_ij · (dOut_i·v_j − delta_i) (times 1 − (z/softcap)² through a soft cap,
// z the capped score), 0 where key j is not visible to query i
// (`att_visible`: causal, window, T). Every invocation must call it; the caller places the barriers.
void att_tile_grads(uint q0, uint k0) {
  for (uint e = gl_LocalInvocationID.x; e < ATT_TILE * ATT_TILE; e += ATT_WG) {
    uint r = e / ATT_TILE, c = e % ATT_TILE;
    bool visible = att_visible(q0 + r, k0 + c);
    float s, dp;
    ATT_DOT(qs, r, ks, c, s)
    ATT_DOT(dos, r, vs, c, dp)
    float z = att_cap(pc.scale * s);
    float p = visible ? exp(z - row_lse[r]) : 0.0;
    float u = pc.softcap > 0.0 ? z / pc.softcap : 0.0;
    ps[r][c] = p;
    ds[r][c] = pc.scale * p * (dp - row_delta[r]) * (1.0 - u * u);
  }
}
