/* Generated from connector/kite/_layout.py by connector/kite/_layout_gen.py: edit those, not this.
 * The build renders it again before compiling; tests/unit/test_layout.py fails on a stale copy. */
#ifndef KITE_LAYOUT_H
#define KITE_LAYOUT_H

/* Modes, in the order of connector.kite.Mode and of the Avro enum's symbols. */
enum { KITE_MODE_LTP, KITE_MODE_QUOTE, KITE_MODE_FULL, KITE_MODES };
#define KITE_MODE_NAMES {"ltp", "quote", "full"}

/* Packet kinds: X(KIND, length in bytes, mode). */
#define KITE_PACKETS(X) \
    X(LTP, 8, KITE_MODE_LTP) \
    X(INDEX_QUOTE, 28, KITE_MODE_QUOTE) \
    X(INDEX_FULL, 32, KITE_MODE_FULL) \
    X(QUOTE, 44, KITE_MODE_QUOTE) \
    X(FULL, 184, KITE_MODE_FULL)
enum { KITE_PACKET_LTP, KITE_PACKET_INDEX_QUOTE, KITE_PACKET_INDEX_FULL, KITE_PACKET_QUOTE, KITE_PACKET_FULL, KITE_PACKET_KINDS };
#define KITE_MIN_PACKET 8

/* The fields of connector.kite.Tick, in order: X(FIELD, type). */
#define KITE_TICK_FIELDS(X) \
    X(INSTRUMENT_TOKEN, LONG) \
    X(MODE, MODE) \
    X(TRADABLE, BOOL) \
    X(LAST_PRICE, DOUBLE) \
    X(LAST_TRADED_QUANTITY, OPT_LONG) \
    X(AVERAGE_TRADED_PRICE, OPT_DOUBLE) \
    X(VOLUME_TRADED, OPT_LONG) \
    X(TOTAL_BUY_QUANTITY, OPT_LONG) \
    X(TOTAL_SELL_QUANTITY, OPT_LONG) \
    X(OPEN, OPT_DOUBLE) \
    X(HIGH, OPT_DOUBLE) \
    X(LOW, OPT_DOUBLE) \
    X(CLOSE, OPT_DOUBLE) \
    X(NET_CHANGE, OPT_DOUBLE) \
    X(CHANGE_PERCENT, OPT_DOUBLE) \
    X(LAST_TRADE_TIME_MS, OPT_LONG) \
    X(OI, OPT_LONG) \
    X(OI_DAY_HIGH, OPT_LONG) \
    X(OI_DAY_LOW, OPT_LONG) \
    X(EXCHANGE_TIMESTAMP_MS, OPT_LONG) \
    X(DEPTH, DEPTH)
enum { KITE_F_INSTRUMENT_TOKEN, KITE_F_MODE, KITE_F_TRADABLE, KITE_F_LAST_PRICE, KITE_F_LAST_TRADED_QUANTITY, KITE_F_AVERAGE_TRADED_PRICE, KITE_F_VOLUME_TRADED, KITE_F_TOTAL_BUY_QUANTITY, KITE_F_TOTAL_SELL_QUANTITY, KITE_F_OPEN, KITE_F_HIGH, KITE_F_LOW, KITE_F_CLOSE, KITE_F_NET_CHANGE, KITE_F_CHANGE_PERCENT, KITE_F_LAST_TRADE_TIME_MS, KITE_F_OI, KITE_F_OI_DAY_HIGH, KITE_F_OI_DAY_LOW, KITE_F_EXCHANGE_TIMESTAMP_MS, KITE_F_DEPTH, KITE_F_COUNT };

/* What each packet kind carries that is read: X(FIELD, kind, offset). The i32 change of index
 * packets is never read, so it is not listed. */
#define KITE_PACKET_LTP_FIELDS(X) \
    X(INSTRUMENT_TOKEN, U32, 0) \
    X(LAST_PRICE, PRICE, 4)
#define KITE_PACKET_INDEX_QUOTE_FIELDS(X) \
    X(INSTRUMENT_TOKEN, U32, 0) \
    X(LAST_PRICE, PRICE, 4) \
    X(HIGH, PRICE, 8) \
    X(LOW, PRICE, 12) \
    X(OPEN, PRICE, 16) \
    X(CLOSE, PRICE, 20)
#define KITE_PACKET_INDEX_FULL_FIELDS(X) \
    X(INSTRUMENT_TOKEN, U32, 0) \
    X(LAST_PRICE, PRICE, 4) \
    X(HIGH, PRICE, 8) \
    X(LOW, PRICE, 12) \
    X(OPEN, PRICE, 16) \
    X(CLOSE, PRICE, 20) \
    X(EXCHANGE_TIMESTAMP_MS, TIME, 28)
#define KITE_PACKET_QUOTE_FIELDS(X) \
    X(INSTRUMENT_TOKEN, U32, 0) \
    X(LAST_PRICE, PRICE, 4) \
    X(LAST_TRADED_QUANTITY, U32, 8) \
    X(AVERAGE_TRADED_PRICE, PRICE, 12) \
    X(VOLUME_TRADED, U32, 16) \
    X(TOTAL_BUY_QUANTITY, U32, 20) \
    X(TOTAL_SELL_QUANTITY, U32, 24) \
    X(OPEN, PRICE, 28) \
    X(HIGH, PRICE, 32) \
    X(LOW, PRICE, 36) \
    X(CLOSE, PRICE, 40)
#define KITE_PACKET_FULL_FIELDS(X) \
    X(INSTRUMENT_TOKEN, U32, 0) \
    X(LAST_PRICE, PRICE, 4) \
    X(LAST_TRADED_QUANTITY, U32, 8) \
    X(AVERAGE_TRADED_PRICE, PRICE, 12) \
    X(VOLUME_TRADED, U32, 16) \
    X(TOTAL_BUY_QUANTITY, U32, 20) \
    X(TOTAL_SELL_QUANTITY, U32, 24) \
    X(OPEN, PRICE, 28) \
    X(HIGH, PRICE, 32) \
    X(LOW, PRICE, 36) \
    X(CLOSE, PRICE, 40) \
    X(LAST_TRADE_TIME_MS, TIME, 44) \
    X(OI, U32, 48) \
    X(OI_DAY_HIGH, U32, 52) \
    X(OI_DAY_LOW, U32, 56) \
    X(EXCHANGE_TIMESTAMP_MS, TIME, 60) \
    X(DEPTH, DEPTH, 64)

/* The order book: levels a side, bytes a level, and a level's fields: X(FIELD, kind, offset, index
 * in the level's three entries of Tick.depth). */
#define KITE_DEPTH_LEVELS 5
#define KITE_DEPTH_LEVEL_SIZE 12
#define KITE_DEPTH_LEVEL_FIELDS 3
#define KITE_DEPTH_LEVEL(X) \
    X(QUANTITY, U32, 0, 0) \
    X(PRICE, PRICE, 4, 1) \
    X(ORDERS, U16, 8, 2)

/* The fields of schemas/tick.avsc, in order: X(writer, FIELD), FIELD being NONE for the fields
 * derived from the token's segment (EXCHANGE, SEGMENT, DIVISOR) or the receipt time (RECEIVED). */
#define KITE_RECORD(X) \
    X(LONG, INSTRUMENT_TOKEN) \
    X(EXCHANGE, NONE) \
    X(SEGMENT, NONE) \
    X(MODE, MODE) \
    X(BOOL, TRADABLE) \
    X(DIVISOR, NONE) \
    X(DOUBLE, LAST_PRICE) \
    X(OPT_LONG, LAST_TRADED_QUANTITY) \
    X(OPT_DOUBLE, AVERAGE_TRADED_PRICE) \
    X(OPT_LONG, VOLUME_TRADED) \
    X(OPT_LONG, TOTAL_BUY_QUANTITY) \
    X(OPT_LONG, TOTAL_SELL_QUANTITY) \
    X(OPT_DOUBLE, OPEN) \
    X(OPT_DOUBLE, HIGH) \
    X(OPT_DOUBLE, LOW) \
    X(OPT_DOUBLE, CLOSE) \
    X(OPT_DOUBLE, NET_CHANGE) \
    X(OPT_DOUBLE, CHANGE_PERCENT) \
    X(OPT_LONG, LAST_TRADE_TIME_MS) \
    X(OPT_LONG, OI) \
    X(OPT_LONG, OI_DAY_HIGH) \
    X(OPT_LONG, OI_DAY_LOW) \
    X(OPT_LONG, EXCHANGE_TIMESTAMP_MS) \
    X(DEPTH_BUY, DEPTH) \
    X(DEPTH_SELL, DEPTH) \
    X(RECEIVED, NONE)
#define KITE_RECORD_MAX_BYTES 518 /* with the depth of a packet */

/* Exchange segments by code (the token's low byte): price divisor, tradable, exchange name. */
typedef struct { double divisor; int tradable; int name_len; const char *name; } kite_segment;
static const kite_segment KITE_SEGMENTS[256] = {
    {100.0, 1, 9, "SEGMENT_0"},
    {100.0, 1, 3, "NSE"},
    {100.0, 1, 3, "NFO"},
    {10000000.0, 1, 3, "CDS"},
    {100.0, 1, 3, "BSE"},
    {100.0, 1, 3, "BFO"},
    {10000.0, 1, 3, "BCD"},
    {100.0, 1, 3, "MCX"},
    {100.0, 1, 5, "MCXSX"},
    {100.0, 0, 7, "INDICES"},
    {100.0, 1, 10, "SEGMENT_10"},
    {100.0, 1, 10, "SEGMENT_11"},
    {10000.0, 1, 3, "NCO"},
    {100.0, 1, 10, "SEGMENT_13"},
    {100.0, 1, 10, "SEGMENT_14"},
    {100.0, 1, 10, "SEGMENT_15"},
    {100.0, 1, 10, "SEGMENT_16"},
    {100.0, 1, 10, "SEGMENT_17"},
    {100.0, 1, 10, "SEGMENT_18"},
    {100.0, 1, 10, "SEGMENT_19"},
    {100.0, 1, 10, "SEGMENT_20"},
    {100.0, 1, 10, "SEGMENT_21"},
    {100.0, 1, 10, "SEGMENT_22"},
    {100.0, 1, 10, "SEGMENT_23"},
    {100.0, 1, 10, "SEGMENT_24"},
    {100.0, 1, 10, "SEGMENT_25"},
    {100.0, 1, 10, "SEGMENT_26"},
    {100.0, 1, 10, "SEGMENT_27"},
    {100.0, 1, 10, "SEGMENT_28"},
    {100.0, 1, 10, "SEGMENT_29"},
    {100.0, 1, 10, "SEGMENT_30"},
    {100.0, 1, 10, "SEGMENT_31"},
    {100.0, 1, 10, "SEGMENT_32"},
    {100.0, 1, 10, "SEGMENT_33"},
    {100.0, 1, 10, "SEGMENT_34"},
    {100.0, 1, 10, "SEGMENT_35"},
    {100.0, 1, 10, "SEGMENT_36"},
    {100.0, 1, 10, "SEGMENT_37"},
    {100.0, 1, 10, "SEGMENT_38"},
    {100.0, 1, 10, "SEGMENT_39"},
    {100.0, 1, 10, "SEGMENT_40"},
    {100.0, 1, 10, "SEGMENT_41"},
    {100.0, 1, 10, "SEGMENT_42"},
    {100.0, 1, 10, "SEGMENT_43"},
    {100.0, 1, 10, "SEGMENT_44"},
    {100.0, 1, 10, "SEGMENT_45"},
    {100.0, 1, 10, "SEGMENT_46"},
    {100.0, 1, 10, "SEGMENT_47"},
    {100.0, 1, 10, "SEGMENT_48"},
    {100.0, 1, 10, "SEGMENT_49"},
    {100.0, 1, 10, "SEGMENT_50"},
    {100.0, 1, 10, "SEGMENT_51"},
    {100.0, 1, 10, "SEGMENT_52"},
    {100.0, 1, 10, "SEGMENT_53"},
    {100.0, 1, 10, "SEGMENT_54"},
    {100.0, 1, 10, "SEGMENT_55"},
    {100.0, 1, 10, "SEGMENT_56"},
    {100.0, 1, 10, "SEGMENT_57"},
    {100.0, 1, 10, "SEGMENT_58"},
    {100.0, 1, 10, "SEGMENT_59"},
    {100.0, 1, 10, "SEGMENT_60"},
    {100.0, 1, 10, "SEGMENT_61"},
    {100.0, 1, 10, "SEGMENT_62"},
    {100.0, 1, 10, "SEGMENT_63"},
    {100.0, 1, 10, "SEGMENT_64"},
    {100.0, 1, 10, "SEGMENT_65"},
    {100.0, 1, 10, "SEGMENT_66"},
    {100.0, 1, 10, "SEGMENT_67"},
    {100.0, 1, 10, "SEGMENT_68"},
    {100.0, 1, 10, "SEGMENT_69"},
    {100.0, 1, 10, "SEGMENT_70"},
    {100.0, 1, 10, "SEGMENT_71"},
    {100.0, 1, 10, "SEGMENT_72"},
    {100.0, 1, 10, "SEGMENT_73"},
    {100.0, 1, 10, "SEGMENT_74"},
    {100.0, 1, 10, "SEGMENT_75"},
    {100.0, 1, 10, "SEGMENT_76"},
    {100.0, 1, 10, "SEGMENT_77"},
    {100.0, 1, 10, "SEGMENT_78"},
    {100.0, 1, 10, "SEGMENT_79"},
    {100.0, 1, 10, "SEGMENT_80"},
    {100.0, 1, 10, "SEGMENT_81"},
    {100.0, 1, 10, "SEGMENT_82"},
    {100.0, 1, 10, "SEGMENT_83"},
    {100.0, 1, 10, "SEGMENT_84"},
    {100.0, 1, 10, "SEGMENT_85"},
    {100.0, 1, 10, "SEGMENT_86"},
    {100.0, 1, 10, "SEGMENT_87"},
    {100.0, 1, 10, "SEGMENT_88"},
    {100.0, 1, 10, "SEGMENT_89"},
    {100.0, 1, 10, "SEGMENT_90"},
    {100.0, 1, 10, "SEGMENT_91"},
    {100.0, 1, 10, "SEGMENT_92"},
    {100.0, 1, 10, "SEGMENT_93"},
    {100.0, 1, 10, "SEGMENT_94"},
    {100.0, 1, 10, "SEGMENT_95"},
    {100.0, 1, 10, "SEGMENT_96"},
    {100.0, 1, 10, "SEGMENT_97"},
    {100.0, 1, 10, "SEGMENT_98"},
    {100.0, 1, 10, "SEGMENT_99"},
    {100.0, 1, 11, "SEGMENT_100"},
    {100.0, 1, 11, "SEGMENT_101"},
    {100.0, 1, 11, "SEGMENT_102"},
    {100.0, 1, 11, "SEGMENT_103"},
    {100.0, 1, 11, "SEGMENT_104"},
    {100.0, 1, 11, "SEGMENT_105"},
    {100.0, 1, 11, "SEGMENT_106"},
    {100.0, 1, 11, "SEGMENT_107"},
    {100.0, 1, 11, "SEGMENT_108"},
    {100.0, 1, 11, "SEGMENT_109"},
    {100.0, 1, 11, "SEGMENT_110"},
    {100.0, 1, 11, "SEGMENT_111"},
    {100.0, 1, 11, "SEGMENT_112"},
    {100.0, 1, 11, "SEGMENT_113"},
    {100.0, 1, 11, "SEGMENT_114"},
    {100.0, 1, 11, "SEGMENT_115"},
    {100.0, 1, 11, "SEGMENT_116"},
    {100.0, 1, 11, "SEGMENT_117"},
    {100.0, 1, 11, "SEGMENT_118"},
    {100.0, 1, 11, "SEGMENT_119"},
    {100.0, 1, 11, "SEGMENT_120"},
    {100.0, 1, 11, "SEGMENT_121"},
    {100.0, 1, 11, "SEGMENT_122"},
    {100.0, 1, 11, "SEGMENT_123"},
    {100.0, 1, 11, "SEGMENT_124"},
    {100.0, 1, 11, "SEGMENT_125"},
    {100.0, 1, 11, "SEGMENT_126"},
    {100.0, 1, 11, "SEGMENT_127"},
    {100.0, 1, 11, "SEGMENT_128"},
    {100.0, 1, 11, "SEGMENT_129"},
    {100.0, 1, 11, "SEGMENT_130"},
    {100.0, 1, 11, "SEGMENT_131"},
    {100.0, 1, 11, "SEGMENT_132"},
    {100.0, 1, 11, "SEGMENT_133"},
    {100.0, 1, 11, "SEGMENT_134"},
    {100.0, 1, 11, "SEGMENT_135"},
    {100.0, 1, 11, "SEGMENT_136"},
    {100.0, 1, 11, "SEGMENT_137"},
    {100.0, 1, 11, "SEGMENT_138"},
    {100.0, 1, 11, "SEGMENT_139"},
    {100.0, 1, 11, "SEGMENT_140"},
    {100.0, 1, 11, "SEGMENT_141"},
    {100.0, 1, 11, "SEGMENT_142"},
    {100.0, 1, 11, "SEGMENT_143"},
    {100.0, 1, 11, "SEGMENT_144"},
    {100.0, 1, 11, "SEGMENT_145"},
    {100.0, 1, 11, "SEGMENT_146"},
    {100.0, 1, 11, "SEGMENT_147"},
    {100.0, 1, 11, "SEGMENT_148"},
    {100.0, 1, 11, "SEGMENT_149"},
    {100.0, 1, 11, "SEGMENT_150"},
    {100.0, 1, 11, "SEGMENT_151"},
    {100.0, 1, 11, "SEGMENT_152"},
    {100.0, 1, 11, "SEGMENT_153"},
    {100.0, 1, 11, "SEGMENT_154"},
    {100.0, 1, 11, "SEGMENT_155"},
    {100.0, 1, 11, "SEGMENT_156"},
    {100.0, 1, 11, "SEGMENT_157"},
    {100.0, 1, 11, "SEGMENT_158"},
    {100.0, 1, 11, "SEGMENT_159"},
    {100.0, 1, 11, "SEGMENT_160"},
    {100.0, 1, 11, "SEGMENT_161"},
    {100.0, 1, 11, "SEGMENT_162"},
    {100.0, 1, 11, "SEGMENT_163"},
    {100.0, 1, 11, "SEGMENT_164"},
    {100.0, 1, 11, "SEGMENT_165"},
    {100.0, 1, 11, "SEGMENT_166"},
    {100.0, 1, 11, "SEGMENT_167"},
    {100.0, 1, 11, "SEGMENT_168"},
    {100.0, 1, 11, "SEGMENT_169"},
    {100.0, 1, 11, "SEGMENT_170"},
    {100.0, 1, 11, "SEGMENT_171"},
    {100.0, 1, 11, "SEGMENT_172"},
    {100.0, 1, 11, "SEGMENT_173"},
    {100.0, 1, 11, "SEGMENT_174"},
    {100.0, 1, 11, "SEGMENT_175"},
    {100.0, 1, 11, "SEGMENT_176"},
    {100.0, 1, 11, "SEGMENT_177"},
    {100.0, 1, 11, "SEGMENT_178"},
    {100.0, 1, 11, "SEGMENT_179"},
    {100.0, 1, 11, "SEGMENT_180"},
    {100.0, 1, 11, "SEGMENT_181"},
    {100.0, 1, 11, "SEGMENT_182"},
    {100.0, 1, 11, "SEGMENT_183"},
    {100.0, 1, 11, "SEGMENT_184"},
    {100.0, 1, 11, "SEGMENT_185"},
    {100.0, 1, 11, "SEGMENT_186"},
    {100.0, 1, 11, "SEGMENT_187"},
    {100.0, 1, 11, "SEGMENT_188"},
    {100.0, 1, 11, "SEGMENT_189"},
    {100.0, 1, 11, "SEGMENT_190"},
    {100.0, 1, 11, "SEGMENT_191"},
    {100.0, 1, 11, "SEGMENT_192"},
    {100.0, 1, 11, "SEGMENT_193"},
    {100.0, 1, 11, "SEGMENT_194"},
    {100.0, 1, 11, "SEGMENT_195"},
    {100.0, 1, 11, "SEGMENT_196"},
    {100.0, 1, 11, "SEGMENT_197"},
    {100.0, 1, 11, "SEGMENT_198"},
    {100.0, 1, 11, "SEGMENT_199"},
    {100.0, 1, 11, "SEGMENT_200"},
    {100.0, 1, 11, "SEGMENT_201"},
    {100.0, 1, 11, "SEGMENT_202"},
    {100.0, 1, 11, "SEGMENT_203"},
    {100.0, 1, 11, "SEGMENT_204"},
    {100.0, 1, 11, "SEGMENT_205"},
    {100.0, 1, 11, "SEGMENT_206"},
    {100.0, 1, 11, "SEGMENT_207"},
    {100.0, 1, 11, "SEGMENT_208"},
    {100.0, 1, 11, "SEGMENT_209"},
    {100.0, 1, 11, "SEGMENT_210"},
    {100.0, 1, 11, "SEGMENT_211"},
    {100.0, 1, 11, "SEGMENT_212"},
    {100.0, 1, 11, "SEGMENT_213"},
    {100.0, 1, 11, "SEGMENT_214"},
    {100.0, 1, 11, "SEGMENT_215"},
    {100.0, 1, 11, "SEGMENT_216"},
    {100.0, 1, 11, "SEGMENT_217"},
    {100.0, 1, 11, "SEGMENT_218"},
    {100.0, 1, 11, "SEGMENT_219"},
    {100.0, 1, 11, "SEGMENT_220"},
    {100.0, 1, 11, "SEGMENT_221"},
    {100.0, 1, 11, "SEGMENT_222"},
    {100.0, 1, 11, "SEGMENT_223"},
    {100.0, 1, 11, "SEGMENT_224"},
    {100.0, 1, 11, "SEGMENT_225"},
    {100.0, 1, 11, "SEGMENT_226"},
    {100.0, 1, 11, "SEGMENT_227"},
    {100.0, 1, 11, "SEGMENT_228"},
    {100.0, 1, 11, "SEGMENT_229"},
    {100.0, 1, 11, "SEGMENT_230"},
    {100.0, 1, 11, "SEGMENT_231"},
    {100.0, 1, 11, "SEGMENT_232"},
    {100.0, 1, 11, "SEGMENT_233"},
    {100.0, 1, 11, "SEGMENT_234"},
    {100.0, 1, 11, "SEGMENT_235"},
    {100.0, 1, 11, "SEGMENT_236"},
    {100.0, 1, 11, "SEGMENT_237"},
    {100.0, 1, 11, "SEGMENT_238"},
    {100.0, 1, 11, "SEGMENT_239"},
    {100.0, 1, 11, "SEGMENT_240"},
    {100.0, 1, 11, "SEGMENT_241"},
    {100.0, 1, 11, "SEGMENT_242"},
    {100.0, 1, 11, "SEGMENT_243"},
    {100.0, 1, 11, "SEGMENT_244"},
    {100.0, 1, 11, "SEGMENT_245"},
    {100.0, 1, 11, "SEGMENT_246"},
    {100.0, 1, 11, "SEGMENT_247"},
    {100.0, 1, 11, "SEGMENT_248"},
    {100.0, 1, 11, "SEGMENT_249"},
    {100.0, 1, 11, "SEGMENT_250"},
    {100.0, 1, 11, "SEGMENT_251"},
    {100.0, 1, 11, "SEGMENT_252"},
    {100.0, 1, 11, "SEGMENT_253"},
    {100.0, 1, 11, "SEGMENT_254"},
    {100.0, 1, 11, "SEGMENT_255"},
};

#endif
