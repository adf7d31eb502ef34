/*
 * Tick ids in C: the CRC-32 of a packet, exactly as zlib.crc32 computes it (IEEE 802.3, reflected,
 * polynomial 0xEDB88320), which is what _ids.py's packet_ids returns. Table-driven, eight bytes a step
 * ("slicing by 8"), with no library linked. On x86-64 Linux, where the CPU multiplies carry-less
 * (PCLMULQDQ), the whole 16-byte blocks of a packet of 32 bytes or more are first folded into one, 16 bytes
 * a step: a full-mode packet's id in less than half the time (with two lines, every packet of both lines
 * gets one). Call kite_ids_init() once before kite_tick_id().
 */
#ifndef KITE_IDS_H
#define KITE_IDS_H

#include <stdint.h>

static uint32_t kite_crc_table[8][256];

#if defined(__x86_64__) && defined(__linux__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define KITE_IDS_FOLD 1
static int kite_crc_fold_cpu, kite_crc_fold_ok; /* the CPU has PCLMULQDQ; tick ids fold */
#endif

static void kite_ids_init(void) {
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int bit = 0; bit < 8; bit++) c = c & 1 ? (c >> 1) ^ UINT32_C(0xEDB88320) : c >> 1;
        kite_crc_table[0][i] = c;
    }
    for (int t = 1; t < 8; t++) /* table t: the CRC of a byte followed by t zero bytes */
        for (int i = 0; i < 256; i++) {
            uint32_t c = kite_crc_table[t - 1][i];
            kite_crc_table[t][i] = (c >> 8) ^ kite_crc_table[0][c & 0xFF];
        }
#ifdef KITE_IDS_FOLD
    __builtin_cpu_init();
    kite_crc_fold_ok = kite_crc_fold_cpu = __builtin_cpu_supports("pclmul") != 0;
#endif
}

/* Tick ids fold if want and the CPU can (tests run the tables alone this way); whether they folded before. */
static int kite_ids_fold(int want) {
#ifdef KITE_IDS_FOLD
    int before = kite_crc_fold_ok;
    kite_crc_fold_ok = want && kite_crc_fold_cpu;
    return before;
#else
    (void)want;
    return 0;
#endif
}

static inline uint32_t kite_le32(const unsigned char *p) {
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}

/* The CRC register c after the len bytes at p, by the tables (no pre- or post-inversion). */
static inline uint32_t kite_crc_sliced(uint32_t c, const unsigned char *p, Py_ssize_t len) {
    const uint32_t (*t)[256] = kite_crc_table;
    for (; len >= 8; p += 8, len -= 8) {
        uint32_t lo = c ^ kite_le32(p), hi = kite_le32(p + 4);
        c = t[7][lo & 0xFF] ^ t[6][(lo >> 8) & 0xFF] ^ t[5][(lo >> 16) & 0xFF] ^ t[4][lo >> 24]
            ^ t[3][hi & 0xFF] ^ t[2][(hi >> 8) & 0xFF] ^ t[1][(hi >> 16) & 0xFF] ^ t[0][hi >> 24];
    }
    while (len-- > 0) c = (c >> 8) ^ t[0][(c ^ *p++) & 0xFF];
    return c;
}

#ifdef KITE_IDS_FOLD
/* The CRC register c after the n bytes at p (n a multiple of 16, at least 32). Each step multiplies the two
 * halves of the running 128 bits by x^(128+32) and x^(128-32) modulo the polynomial (bit-reflected, as in
 * Intel's paper "Fast CRC Computation for Generic Polynomials Using PCLMULQDQ Instruction") and adds the
 * next 16 bytes; the 16 bytes left have the CRC of all of them, and the tables finish it. */
__attribute__((target("pclmul,sse2"))) static uint32_t kite_crc_folded(uint32_t c, const unsigned char *p,
                                                                      Py_ssize_t n) {
    const __m128i k = _mm_set_epi64x(INT64_C(0xccaa009e), INT64_C(0x1751997d0));
    __m128i x = _mm_xor_si128(_mm_loadu_si128((const __m128i *)p), _mm_cvtsi32_si128((int)c));
    for (Py_ssize_t i = 16; i < n; i += 16) {
        __m128i lo = _mm_clmulepi64_si128(x, k, 0x00), hi = _mm_clmulepi64_si128(x, k, 0x11);
        x = _mm_xor_si128(_mm_xor_si128(lo, hi), _mm_loadu_si128((const __m128i *)(p + i)));
    }
    unsigned char left[16];
    _mm_storeu_si128((__m128i *)left, x);
    return kite_crc_sliced(0, left, 16);
}
#endif

/* The tick id of the len bytes at p (a packet, without its length prefix). */
static inline uint32_t kite_tick_id(const unsigned char *p, Py_ssize_t len) {
    uint32_t c = UINT32_C(0xFFFFFFFF);
#ifdef KITE_IDS_FOLD
    if (kite_crc_fold_ok && len >= 32) {
        Py_ssize_t n = len & ~(Py_ssize_t)15;
        c = kite_crc_folded(c, p, n);
        p += n;
        len -= n;
    }
#endif
    return kite_crc_sliced(c, p, len) ^ UINT32_C(0xFFFFFFFF);
}

#endif
