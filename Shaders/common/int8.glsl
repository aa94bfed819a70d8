// int8 weights (Int8Weight): 4 int8 values per uint word, little-endian; one f32 scale per
// block and, when ZP = 1, one f32 zero point per block. Used by dequantize_int8.comp and
// matmul_int8.comp.
//
// INT8_SCALES(s, z): declares the scales buffer at binding s and (ZP = 1) the zero points at
// binding z, and int8_dequant(q, block) = (q − zp)·scale with each step rounded in f32.

// The signed value of byte j (0…3) of a word.
float int8_at(uint word, uint j) {
  return float(bitfieldExtract(int(word), int(8u * j), 8));
}

#if ZP
#define INT8_SCALES(s, z) \
  layout(set = 0, binding = s) readonly buffer Scales { float scales[]; }; \
  layout(set = 0, binding = z) readonly buffer ZeroPoints { float zps[]; }; \
  float int8_dequant(float q, uint b) { \
    precise float v = q - zps[pc.boff[z] + b]; \
    precise float r = v * scales[pc.boff[s] + b]; \
    return r; \
  }
#else
#define INT8_SCALES(s, z) \
  layout(set = 0, binding = s) readonly buffer Scales { float scales[]; }; \
  float int8_dequant(float q, uint b) { \
    precise float r = q * scales[pc.boff[s] + b]; \
    return r; \
  }
#endif
