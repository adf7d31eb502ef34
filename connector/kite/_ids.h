/*
 * Tick ids in C: the CRC-32 of a packet, exactly as zlib.crc32 computes it (IEEE 802.3, reflected,
 * polynomial 0xEDB88320), which is what _ids.py's packet_ids returns. Table-driven, eight bytes a step
 * ("slicing by 8"), so no library is linked. Call kite_ids_init() once before kite_tick_id().
 */
#ifndef KITE_IDS_H
#define KITE_IDS_H

#include <stdint.h>

static uint32_t kite_crc_table[8][256];

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
}

static inline uint32_t kite_le32(const unsigned char *p) {
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}

/* The tick id of the len bytes at p (a packet, without its length prefix). */
static inline uint32_t kite_tick_id(const unsigned char *p, Py_ssize_t len) {
    const uint32_t (*t)[256] = kite_crc_table;
    uint32_t c = UINT32_C(0xFFFFFFFF);
    for (; len >= 8; p += 8, len -= 8) {
        uint32_t lo = c ^ kite_le32(p), hi = kite_le32(p + 4);
        c = t[7][lo & 0xFF] ^ t[6][(lo >> 8) & 0xFF] ^ t[5][(lo >> 16) & 0xFF] ^ t[4][lo >> 24]
            ^ t[3][hi & 0xFF] ^ t[2][(hi >> 8) & 0xFF] ^ t[1][(hi >> 16) & 0xFF] ^ t[0][hi >> 24];
    }
    while (len-- > 0) c = (c >> 8) ^ t[0][(c ^ *p++) & 0xFF];
    return c ^ UINT32_C(0xFFFFFFFF);
}

#endif
