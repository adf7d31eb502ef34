/*
 * Binary Kite messages read into plain C values: the one reader of the C decoder (_native.c) and the
 * C transcoder (connector/serde/_speedups.c). What a packet holds where comes from _layout.h, generated
 * from _layout.py; this file only says how each kind of field is read. Include Python.h first.
 */
#ifndef KITE_PACKET_H
#define KITE_PACKET_H

#include <stdint.h>
#include "_layout.h"

#define KITE_BIT(F) (UINT32_C(1) << KITE_F_##F)
_Static_assert(KITE_F_COUNT <= 32, "one presence bit per Tick field");

/* One tick as plain values, slots indexed by Tick field: integers in i, rupees in d. */
typedef struct {
    uint32_t present;               /* KITE_BIT of each field the tick has */
    int mode;                       /* KITE_MODE_ */
    int segment;                    /* the token's low byte */
    const kite_segment *seg;        /* KITE_SEGMENTS[segment] */
    long long i[KITE_F_COUNT];
    double d[KITE_F_COUNT];
    const unsigned char *depth;     /* the packet's 2 * KITE_DEPTH_LEVELS levels, or NULL */
} kite_tick;

static inline uint32_t kite_be32(const unsigned char *p) {
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | (uint32_t)p[3];
}

static inline uint32_t kite_be16(const unsigned char *p) { return ((uint32_t)p[0] << 8) | (uint32_t)p[1]; }

/* The instrument token of a packet: every kind starts with it (_layout.py; test_layout.py checks). */
static inline uint32_t kite_token(const unsigned char *p) { return kite_be32(p); }

/* The KITE_PACKET_ kind of a packet of len bytes, or -1 when no kind has that length. */
static inline int kite_packet_kind(Py_ssize_t len) {
    switch (len) {
#define KITE_KIND_CASE(K, length, mode) case length: return KITE_PACKET_##K;
    KITE_PACKETS(KITE_KIND_CASE)
#undef KITE_KIND_CASE
    default: return -1;
    }
}

/* The KITE_MODE_ of a packet kind. */
static inline int kite_kind_mode(int kind) {
    switch (kind) {
#define KITE_MODE_CASE(K, length, mode) case KITE_PACKET_##K: return mode;
    KITE_PACKETS(KITE_MODE_CASE)
#undef KITE_MODE_CASE
    default: return -1;
    }
}

/* A binary message is well formed when its packet count fits in it, kite_next_packet finds each packet,
 * and nothing is left after the last. Heartbeats (under 2 bytes) are not. */

/* The packet count of the message, or -1 when it cannot hold that many packets. */
static inline Py_ssize_t kite_packet_count(const unsigned char *d, Py_ssize_t size) {
    if (size < 2) return -1;
    Py_ssize_t count = (Py_ssize_t)kite_be16(d);
    return count > (size - 2) / (2 + KITE_MIN_PACKET) ? -1 : count;
}

/* The kind of the packet whose length prefix is at *off, pointed to by *packet, *off then moved past it;
 * or -1 when it runs past the end or no kind has its length. */
static inline int kite_next_packet(const unsigned char *d, Py_ssize_t size, Py_ssize_t *off,
                                   const unsigned char **packet) {
    if (*off + 2 > size) return -1;
    Py_ssize_t len = (Py_ssize_t)kite_be16(d + *off);
    int kind = kite_packet_kind(len);
    if (kind < 0 || *off + 2 + len > size) return -1;
    *packet = d + *off + 2;
    *off += 2 + len;
    return kind;
}

#define KITE_READ_U32(F, at) t->i[KITE_F_##F] = kite_be32(p + (at));
#define KITE_READ_PRICE(F, at) t->d[KITE_F_##F] = kite_be32(p + (at)) / t->seg->divisor;
#define KITE_READ_TIME(F, at) t->i[KITE_F_##F] = (long long)kite_be32(p + (at)) * 1000;
#define KITE_READ_DEPTH(F, at) t->depth = p + (at);
#define KITE_READ(F, kind, at) KITE_READ_##kind(F, at) t->present |= KITE_BIT(F);

/* Reads the packet p of the given kind (its length checked) into t, the computed fields included:
 * mode, tradable, and where the close is carried, net_change and change_percent. */
static inline void kite_read(const unsigned char *p, int kind, kite_tick *t) {
    *t = (kite_tick){0}; /* slots the packet lacks are never read, but a compiler cannot know it */
    t->segment = (int)(kite_token(p) & 0xFF);
    t->seg = &KITE_SEGMENTS[t->segment];
    t->present = KITE_BIT(MODE) | KITE_BIT(TRADABLE);
    t->i[KITE_F_TRADABLE] = t->seg->tradable;
    switch (kind) {
#define KITE_READ_KIND(K, length, mode_) case KITE_PACKET_##K: t->mode = mode_; KITE_PACKET_##K##_FIELDS(KITE_READ) break;
    KITE_PACKETS(KITE_READ_KIND)
#undef KITE_READ_KIND
    }
    if (t->present & KITE_BIT(CLOSE)) {
        double last = t->d[KITE_F_LAST_PRICE], close = t->d[KITE_F_CLOSE];
        t->d[KITE_F_NET_CHANGE] = last - close;
        t->d[KITE_F_CHANGE_PERCENT] = close != 0 ? (last - close) * 100 / close : 0.0;
        t->present |= KITE_BIT(NET_CHANGE) | KITE_BIT(CHANGE_PERCENT);
    }
}

#endif
