// 16-bit floats packed two per uint word (element 2p in the low half of word p), converted
// by bit manipulation, so no float16 / int16 device feature is needed and the results are
// the same on every device: these match Swift's Float16(Float) / Float(Float16) and
// BFloat16.fromFloat / toFloat exactly (GLSL leaves packHalf2x16's rounding and denormals to
// the implementation). Used by cast.comp and the 16-bit operands of matmul.comp and
// lora_forward.comp.
//
// Storage type codes (the shaders' *_TYPE defines and Swift's `ShaderFloatType`):
//   0 = f32, 1 = f16, 2 = bf16.

// f16 bits → f32, exact (denormals included).
float f16_to_f32(uint h) {
  uint sign = (h & 0x8000u) << 16;
  uint e = (h >> 10) & 0x1Fu;
  uint m = h & 0x3FFu;
  if (e == 0u) {
    float v = float(m) * exp2(-24.0);   // exact: m < 2^10
    return sign != 0u ? -v : v;
  }
  if (e == 31u) return uintBitsToFloat(sign | 0x7F800000u | (m << 13));
  return uintBitsToFloat(sign | ((e + 112u) << 23) | (m << 13));
}

// f32 → f16 bits, round to nearest even; overflow → inf, NaN → quiet NaN.
uint f32_to_f16(float v) {
  uint x = floatBitsToUint(v);
  uint sign = (x >> 16) & 0x8000u;
  uint ax = x & 0x7FFFFFFFu;
  if (ax > 0x7F800000u) return sign | 0x7E00u;
  if (ax >= 0x47800000u) return sign | 0x7C00u;        // ≥ 65536 (and inf)
  if (ax < 0x38800000u) {                               // below 2^-14: subnormal or 0
    if (ax < 0x33000000u) return sign;                  // < 2^-25 rounds to 0
    uint e = ax >> 23;
    uint m = (ax & 0x7FFFFFu) | 0x800000u;
    uint shift = 126u - e;                              // 14 … 24
    uint q = m >> shift;
    uint rem = m & ((1u << shift) - 1u);
    uint half_ = 1u << (shift - 1u);
    if (rem > half_ || (rem == half_ && (q & 1u) != 0u)) q += 1u;
    return sign | q;
  }
  uint h = (((ax >> 23) - 112u) << 10) | ((ax & 0x7FFFFFu) >> 13);
  uint rem = ax & 0x1FFFu;
  if (rem > 0x1000u || (rem == 0x1000u && (h & 1u) != 0u)) h += 1u;  // carry may reach inf
  return sign | h;
}

// f32 → bf16 bits, round to nearest even; NaN stays a quiet NaN (BFloat16.fromFloat).
uint f32_to_bf16(float v) {
  uint b = floatBitsToUint(v);
  if (isnan(v)) return ((b >> 16) | 0x40u) & 0xFFFFu;
  return ((b + 0x7FFFu + ((b >> 16) & 1u)) >> 16) & 0xFFFFu;
}

// bf16 bits → f32 (exact).
float bf16_to_f32(uint h) { return uintBitsToFloat(h << 16); }

// Half `e & 1` of a packed word (the low half holds the even element).
uint half_bits(uint word, uint e) { return (e & 1u) == 0u ? (word & 0xFFFFu) : (word >> 16); }

// A 16-bit element's f32 value, from its word: TYPE 1 f16, 2 bf16.
#define HALF_TO_F32(TYPE, bits) ((TYPE) == 1 ? f16_to_f32(bits) : bf16_to_f32(bits))
