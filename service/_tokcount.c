/* Exact token counts for OpenAI's cl100k_base and o200k_base encodings, without building token ids.
 *
 * Why this exists: dataset validation counts every message in both encodings, and the tokenizer is most of its CPU
 * time. tiktoken and bpe-openai split text with a general regular-expression engine and return ids; the libraries that
 * are faster (fastokens) keep per-thread caches of up to 64 MiB per encoding and need about 260 MB for the two
 * vocabularies, which a validation held under 300 MB cannot afford. This module does one thing: it splits text exactly
 * as the two encodings' patterns do (hand-written matchers that follow the regex engine's leftmost-first, greedy,
 * backtracking order alternative by alternative), applies tiktoken's byte-pair merge to each piece, and memoises
 * piece counts in a small fixed table. Its memory is the rank table (under 10 MB) plus 1 MiB of cache per counter.
 *
 * Exactness: character classes come from a table the caller builds with Python's unicodedata. Code points that table
 * marks as unknown (unassigned in Python's Unicode version, which may be assigned in the regex engine's; surrogates)
 * and pieces too long for the quadratic merge make ``count`` hand the whole text to a fallback counter (bpe-openai or
 * tiktoken), so every answer is the reference tokenizer's. The test suite checks the counts against tiktoken on
 * fuzzed text built from every class boundary these matchers distinguish.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

/* Character class bits (the table the caller passes: one byte per code point). */
#define C_L 0x01  /* \p{L} */
#define C_N 0x02  /* \p{N} */
#define C_U 0x04  /* [\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}] */
#define C_W 0x08  /* [\p{Ll}\p{Lm}\p{Lo}\p{M}] */
#define C_S 0x10  /* \s (Unicode White_Space) */
#define C_X 0x20  /* unknown: fall back to the reference tokenizer */

#define KIND_CL100K 0
#define KIND_O200K 1

#define MAX_MERGE_BYTES 256     /* longer pieces go to the fallback (the merge below is quadratic) */
#define CACHE_BITS 15
#define CACHE_KEY_MAX 22        /* pieces up to this many bytes are memoised */
#define RANK_NONE 0xFFFFFFFFu

typedef struct {
    uint8_t len;                /* 0: empty slot */
    uint8_t key[CACHE_KEY_MAX];
    uint8_t pad;
    uint32_t count;
    uint32_t pad2;
} CacheEntry;                   /* 32 bytes */

/* One slot of the rank table (open addressing on the token's bytes). The first 8 bytes are kept in the slot, so
 * that a probe for a token of up to 8 bytes (most of them) reads one cache line and never the arena. */
typedef struct {
    uint64_t head;              /* first min(8, len) bytes, zero padded */
    uint32_t rank;
    uint32_t len;               /* 0: empty slot */
    uint32_t off;               /* bytes 9.. in the arena */
    uint32_t pad;
} RankSlot;                     /* 24 bytes */

typedef struct {
    PyObject_HEAD
    int kind;
    PyObject *classes_obj;      /* bytes, 0x110000 entries */
    const uint8_t *classes;
    PyObject *fallback;         /* callable(str) -> int */
    uint8_t *arena;             /* token bytes beyond the first 8 */
    RankSlot *slots;
    size_t mask;
    uint32_t *pair_rank;        /* rank of every 2-byte token, indexed by its bytes (the merge's hottest lookup) */
    CacheEntry *cache;
    uint64_t fallbacks;
} Counter;

static inline uint64_t hash_bytes(const uint8_t *p, size_t n) {
    /* FNV-1a over 8-byte words then the tail, finished with a SplitMix64 mix: cheap and well spread. */
    uint64_t h = 0xcbf29ce484222325ull ^ (uint64_t)n;
    while (n >= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        h = (h ^ w) * 0x100000001b3ull;
        h ^= h >> 29;
        p += 8;
        n -= 8;
    }
    uint64_t w = 0;
    memcpy(&w, p, n);
    h = (h ^ w) * 0x100000001b3ull;
    h ^= h >> 30;
    h *= 0xbf58476d1ce4e5b9ull;
    h ^= h >> 27;
    h *= 0x94d049bb133111ebull;
    h ^= h >> 31;
    return h;
}

static inline uint64_t head_of(const uint8_t *p, size_t n) {
    uint64_t h = 0;
    memcpy(&h, p, n < 8 ? n : 8);
    return h;
}

static inline uint32_t rank_of(const Counter *c, const uint8_t *p, size_t n) {
    if (n == 2) return c->pair_rank[p[0] | (p[1] << 8)];
    const uint64_t head = head_of(p, n);
    size_t i = (size_t)hash_bytes(p, n) & c->mask;
    for (;;) {
        const RankSlot *s = &c->slots[i];
        if (s->len == 0) return RANK_NONE;
        if (s->len == n && s->head == head && (n <= 8 || memcmp(c->arena + s->off, p + 8, n - 8) == 0)) return s->rank;
        i = (i + 1) & c->mask;
    }
}

/* tiktoken's byte_pair_merge: repeatedly merge the adjacent pair whose merged bytes have the lowest rank (the
 * leftmost on ties) until no merged pair is a token; the number of parts left is the token count. */
static Py_ssize_t merge_count(const Counter *c, const uint8_t *piece, size_t n) {
    size_t start[MAX_MERGE_BYTES + 2];
    uint32_t rank[MAX_MERGE_BYTES + 2];
    size_t parts = 0;
    for (size_t i = 0; i + 1 < n; i++) {
        start[parts] = i;
        rank[parts] = rank_of(c, piece + i, 2);
        parts++;
    }
    start[parts] = n - 1;
    rank[parts] = RANK_NONE;
    parts++;
    start[parts] = n;
    rank[parts] = RANK_NONE;
    parts++;
    for (;;) {
        uint32_t best = RANK_NONE;
        size_t at = 0;
        for (size_t i = 0; i + 1 < parts; i++) {
            if (rank[i] < best) {
                best = rank[i];
                at = i;
            }
        }
        if (best == RANK_NONE) break;
        /* Ranks of the pairs that now include the merged part (parts i-1..i+1 and i..i+2, before the removal). */
        if (at > 0) {
            rank[at - 1] = (at - 1 + 3 < parts)
                ? rank_of(c, piece + start[at - 1], start[at + 2] - start[at - 1]) : RANK_NONE;
        }
        rank[at] = (at + 3 < parts) ? rank_of(c, piece + start[at], start[at + 3] - start[at]) : RANK_NONE;
        memmove(&start[at + 1], &start[at + 2], (parts - at - 2) * sizeof(size_t));
        memmove(&rank[at + 1], &rank[at + 2], (parts - at - 2) * sizeof(uint32_t));
        parts--;
    }
    return (Py_ssize_t)(parts - 1);
}

/* Tokens of one piece (UTF-8 bytes), or -1 when it is too long to merge here. */
static Py_ssize_t piece_count(Counter *c, const uint8_t *p, size_t n) {
    /* Most pieces are one token: one probe of the rank table answers them. The memo only holds merged pieces. */
    if (n == 1 || rank_of(c, p, n) != RANK_NONE) return 1;
    CacheEntry *e = NULL;
    if (n <= CACHE_KEY_MAX) {
        e = &c->cache[(hash_bytes(p, n) >> 7) & ((1u << CACHE_BITS) - 1)];
        if (e->len == n && memcmp(e->key, p, n) == 0) return e->count;
    }
    if (n > MAX_MERGE_BYTES) return -1;
    Py_ssize_t count = merge_count(c, p, n);
    if (e != NULL) {
        e->len = (uint8_t)n;
        memcpy(e->key, p, n);
        e->count = (uint32_t)count;
    }
    return count;
}

/* --- splitting ------------------------------------------------------------------------------------------------------ */

typedef struct {
    int kind;
    const void *data;
    Py_ssize_t n;
    const uint8_t *cls;
} Text;

static inline Py_UCS4 CH(const Text *t, Py_ssize_t i) { return PyUnicode_READ(t->kind, t->data, i); }
static inline uint8_t CLS(const Text *t, Py_ssize_t i) { return t->cls[CH(t, i)]; }
static inline int is_crlf(Py_UCS4 ch) { return ch == '\r' || ch == '\n'; }
/* [^\r\n\p{L}\p{N}] */
static inline int is_prefix(const Text *t, Py_ssize_t i) {
    Py_UCS4 ch = CH(t, i);
    return !is_crlf(ch) && !(t->cls[ch] & (C_L | C_N));
}
/* [^\s\p{L}\p{N}] */
static inline int is_punct(const Text *t, Py_ssize_t i) { return !(CLS(t, i) & (C_S | C_L | C_N)); }

/* Case-insensitive letters of the contractions, as the regex engine folds them (s also matches U+017F LONG S). */
static inline Py_UCS4 fold(Py_UCS4 ch) {
    if (ch >= 'A' && ch <= 'Z') return ch + 32;
    if (ch == 0x17F) return 's';
    return ch;
}

/* End of (?i:'s|'t|'re|'ve|'m|'ll|'d) at i, or i when it does not match there. */
static Py_ssize_t contraction(const Text *t, Py_ssize_t i) {
    if (i + 1 >= t->n || CH(t, i) != '\'') return i;
    Py_UCS4 a = fold(CH(t, i + 1));
    if (a == 's' || a == 't' || a == 'm' || a == 'd') return i + 2;
    if (i + 2 >= t->n) return i;
    Py_UCS4 b = fold(CH(t, i + 2));
    if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l')) return i + 3;
    return i;
}

/* End of the whitespace run starting at i. */
static inline Py_ssize_t space_run(const Text *t, Py_ssize_t i) {
    while (i < t->n && (CLS(t, i) & C_S)) i++;
    return i;
}

/* The whitespace alternatives shared by both patterns, from pos (a whitespace character) given the run's end j:
 * \s*[\r\n]+ (up to the run's last line break), then \s+(?!\S), then a single \s. */
static Py_ssize_t space_piece(const Text *t, Py_ssize_t pos, Py_ssize_t j) {
    for (Py_ssize_t k = j - 1; k >= pos; k--) {
        if (is_crlf(CH(t, k))) return k + 1;
    }
    if (j == t->n) return j;
    if (j - pos >= 2) return j - 1;
    return pos + 1;
}

/* End of \p{N}{1,3} from pos (a number character). */
static inline Py_ssize_t number_piece(const Text *t, Py_ssize_t pos) {
    Py_ssize_t e = pos + 1;
    while (e < t->n && e < pos + 3 && (CLS(t, e) & C_N)) e++;
    return e;
}

/* End of " ?[^\s\p{L}\p{N}]+" followed by line breaks (and slashes when ``slash``: o200k's [\r\n/]*), or pos when
 * it does not match there. */
static Py_ssize_t punct_piece(const Text *t, Py_ssize_t pos, int slash) {
    const Py_ssize_t n = t->n;
    Py_ssize_t i = (CH(t, pos) == ' ' && pos + 1 < n && is_punct(t, pos + 1)) ? pos + 1 : pos;
    if (!is_punct(t, i)) return pos;
    while (i < n && is_punct(t, i)) i++;
    while (i < n) {
        Py_UCS4 ch = CH(t, i);
        if (!is_crlf(ch) && !(slash && ch == '/')) break;
        i++;
    }
    return i;
}

/* cl100k_base as tiktoken writes it:
 * '(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+|\s++$|\s*[\r\n]|\s+(?!\S)|\s */
static Py_ssize_t next_cl100k(const Text *t, Py_ssize_t pos) {
    const Py_ssize_t n = t->n;
    Py_UCS4 ch = CH(t, pos);
    uint8_t cl = t->cls[ch];
    if (ch == '\'') {
        Py_ssize_t e = contraction(t, pos);
        if (e > pos) return e;
    }
    Py_ssize_t i = pos;
    if (is_prefix(t, pos)) i = pos + 1;  /* possessive: never given back */
    if (i < n && (CLS(t, i) & C_L)) {
        while (i < n && (CLS(t, i) & C_L)) i++;
        return i;
    }
    if (cl & C_N) return number_piece(t, pos);
    Py_ssize_t e = punct_piece(t, pos, 0);
    if (e > pos) return e;
    /* whitespace */
    Py_ssize_t j = space_run(t, pos);
    if (j == n) return n;  /* \s++$ */
    return space_piece(t, pos, j);
}

/* o200k_base:
 * [^\r\n\p{L}\p{N}]?[U]*[W]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?|[^\r\n\p{L}\p{N}]?[U]+[W]*(?i:...)?|\p{N}{1,3}|
 *  ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+
 * with U = [\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}] and W = [\p{Ll}\p{Lm}\p{Lo}\p{M}]. */
static Py_ssize_t next_o200k(const Text *t, Py_ssize_t pos) {
    const Py_ssize_t n = t->n;
    Py_UCS4 ch = CH(t, pos);
    uint8_t cl = t->cls[ch];
    const int prefix = is_prefix(t, pos);
    /* First alternative: the optional prefix is tried taken, then not; U* from longest to shortest; W+ greedy. */
    for (int take = prefix; take >= 0; take--) {
        Py_ssize_t s = pos + take;
        Py_ssize_t a = s;
        while (a < n && (CLS(t, a) & C_U)) a++;
        for (Py_ssize_t k = a; k >= s; k--) {
            if (k < n && (CLS(t, k) & C_W)) {
                Py_ssize_t e = k + 1;
                while (e < n && (CLS(t, e) & C_W)) e++;
                return contraction(t, e);
            }
        }
    }
    /* Second alternative: U+ then W* (no backtracking can change its first success). */
    for (int take = prefix; take >= 0; take--) {
        Py_ssize_t s = pos + take;
        if (s < n && (CLS(t, s) & C_U)) {
            Py_ssize_t e = s;
            while (e < n && (CLS(t, e) & C_U)) e++;
            while (e < n && (CLS(t, e) & C_W)) e++;
            return contraction(t, e);
        }
    }
    if (cl & C_N) return number_piece(t, pos);
    Py_ssize_t e = punct_piece(t, pos, 1);
    if (e > pos) return e;
    return space_piece(t, pos, space_run(t, pos));
}

/* UTF-8 of text[a:b] into buf (at most cap bytes); returns the length, or -1 when it does not fit. */
static Py_ssize_t utf8_piece(const Text *t, Py_ssize_t a, Py_ssize_t b, uint8_t *buf, Py_ssize_t cap) {
    Py_ssize_t n = 0;
    if (t->kind == PyUnicode_1BYTE_KIND) {
        const Py_UCS1 *d = (const Py_UCS1 *)t->data;
        for (Py_ssize_t i = a; i < b; i++) {
            Py_UCS1 ch = d[i];
            if (n + 2 > cap) return -1;
            if (ch < 0x80) {
                buf[n++] = ch;
            } else {
                buf[n++] = 0xC0 | (ch >> 6);
                buf[n++] = 0x80 | (ch & 0x3F);
            }
        }
        return n;
    }
    for (Py_ssize_t i = a; i < b; i++) {
        Py_UCS4 ch = CH(t, i);
        if (n + 4 > cap) return -1;
        if (ch < 0x80) {
            buf[n++] = (uint8_t)ch;
        } else if (ch < 0x800) {
            buf[n++] = 0xC0 | (ch >> 6);
            buf[n++] = 0x80 | (ch & 0x3F);
        } else if (ch < 0x10000) {
            buf[n++] = 0xE0 | (ch >> 12);
            buf[n++] = 0x80 | ((ch >> 6) & 0x3F);
            buf[n++] = 0x80 | (ch & 0x3F);
        } else {
            buf[n++] = 0xF0 | (ch >> 18);
            buf[n++] = 0x80 | ((ch >> 12) & 0x3F);
            buf[n++] = 0x80 | ((ch >> 6) & 0x3F);
            buf[n++] = 0x80 | (ch & 0x3F);
        }
    }
    return n;
}

/* Tokens of the whole text, or -1 when it needs the fallback. */
static Py_ssize_t count_text(Counter *c, PyObject *text) {
    Text t;
    t.kind = PyUnicode_KIND(text);
    t.data = PyUnicode_DATA(text);
    t.n = PyUnicode_GET_LENGTH(text);
    t.cls = c->classes;
    if (t.kind != PyUnicode_1BYTE_KIND) {
        /* Unknown code points anywhere send the text to the fallback before any work is done. */
        for (Py_ssize_t i = 0; i < t.n; i++) {
            if (CLS(&t, i) & C_X) return -1;
        }
    }
    uint8_t buf[MAX_MERGE_BYTES + 4];
    Py_ssize_t total = 0, pos = 0;
    while (pos < t.n) {
        Py_ssize_t end = c->kind == KIND_O200K ? next_o200k(&t, pos) : next_cl100k(&t, pos);
        Py_ssize_t len = utf8_piece(&t, pos, end, buf, MAX_MERGE_BYTES);
        if (len < 0) return -1;
        Py_ssize_t k = piece_count(c, buf, (size_t)len);
        if (k < 0) return -1;
        total += k;
        pos = end;
    }
    return total;
}

/* --- the Python type ------------------------------------------------------------------------------------------------ */

static void Counter_dealloc(Counter *self) {
    Py_XDECREF(self->classes_obj);
    Py_XDECREF(self->fallback);
    PyMem_Free(self->arena);
    PyMem_Free(self->slots);
    PyMem_Free(self->pair_rank);
    PyMem_Free(self->cache);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* Counter(kind, tokens, classes, fallback): ``tokens`` is a list of bytes where item i is the token of rank i (None for
 * an unused rank), ``classes`` a bytes object of 0x110000 class bytes, ``fallback`` a callable counting a str. */
static int Counter_init(Counter *self, PyObject *args, PyObject *kwds) {
    int kind;
    PyObject *tokens, *classes, *fallback;
    if (!PyArg_ParseTuple(args, "iO!O!O:Counter", &kind, &PyList_Type, &tokens, &PyBytes_Type, &classes, &fallback))
        return -1;
    if (kind != KIND_CL100K && kind != KIND_O200K) {
        PyErr_SetString(PyExc_ValueError, "kind must be 0 (cl100k_base) or 1 (o200k_base)");
        return -1;
    }
    if (PyBytes_GET_SIZE(classes) != 0x110000) {
        PyErr_SetString(PyExc_ValueError, "classes must hold one byte per code point (0x110000)");
        return -1;
    }
    if (!PyCallable_Check(fallback)) {
        PyErr_SetString(PyExc_TypeError, "fallback must be callable");
        return -1;
    }
    if (self->arena != NULL) {
        PyErr_SetString(PyExc_RuntimeError, "Counter is already initialised");
        return -1;
    }
    Py_ssize_t count = PyList_GET_SIZE(tokens);
    size_t total = 0;
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *item = PyList_GET_ITEM(tokens, i);
        if (item == Py_None) continue;
        if (!PyBytes_Check(item) || PyBytes_GET_SIZE(item) == 0 || PyBytes_GET_SIZE(item) > 0xFFFF) {
            PyErr_Format(PyExc_ValueError, "token of rank %zd must be non-empty bytes", i);
            return -1;
        }
        if (PyBytes_GET_SIZE(item) > 8) total += (size_t)PyBytes_GET_SIZE(item) - 8;
    }
    if (count >= (Py_ssize_t)RANK_NONE) {
        PyErr_SetString(PyExc_ValueError, "too many tokens");
        return -1;
    }
    size_t slots = 1;
    while (slots < (size_t)count * 2 + 16) slots <<= 1;
    self->arena = PyMem_Malloc(total ? total : 1);
    self->slots = PyMem_Calloc(slots, sizeof(RankSlot));
    self->pair_rank = PyMem_Malloc(65536 * sizeof(uint32_t));
    self->cache = PyMem_Calloc((size_t)1 << CACHE_BITS, sizeof(CacheEntry));
    if (!self->arena || !self->slots || !self->pair_rank || !self->cache) {
        PyErr_NoMemory();
        return -1;
    }
    for (size_t i = 0; i < 65536; i++) self->pair_rank[i] = RANK_NONE;
    self->mask = slots - 1;
    size_t off = 0;
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *item = PyList_GET_ITEM(tokens, i);
        if (item == Py_None) continue;
        const uint8_t *p = (const uint8_t *)PyBytes_AS_STRING(item);
        size_t n = (size_t)PyBytes_GET_SIZE(item);
        if (rank_of(self, p, n) != RANK_NONE) {
            PyErr_Format(PyExc_ValueError, "token of rank %zd appears twice", i);
            return -1;
        }
        if (n == 2) {
            self->pair_rank[p[0] | (p[1] << 8)] = (uint32_t)i;
            continue;
        }
        size_t s = (size_t)hash_bytes(p, n) & self->mask;
        while (self->slots[s].len != 0) s = (s + 1) & self->mask;
        RankSlot *slot = &self->slots[s];
        slot->head = head_of(p, n);
        slot->rank = (uint32_t)i;
        slot->len = (uint32_t)n;
        slot->off = (uint32_t)off;
        if (n > 8) {
            memcpy(self->arena + off, p + 8, n - 8);
            off += n - 8;
        }
    }
    self->kind = kind;
    Py_INCREF(classes);
    self->classes_obj = classes;
    self->classes = (const uint8_t *)PyBytes_AS_STRING(classes);
    Py_INCREF(fallback);
    self->fallback = fallback;
    return 0;
}

static PyObject *Counter_count(Counter *self, PyObject *text) {
    if (self->arena == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "Counter is not initialised");
        return NULL;
    }
    if (!PyUnicode_Check(text)) {
        PyErr_SetString(PyExc_TypeError, "count() takes a str");
        return NULL;
    }
    if (PyUnicode_READY(text) < 0) return NULL;  /* legacy strings of old C APIs have no canonical form yet */
    Py_ssize_t n = count_text(self, text);
    if (n >= 0) return PyLong_FromSsize_t(n);
    self->fallbacks++;
    return PyObject_CallOneArg(self->fallback, text);
}

static PyObject *Counter_native_count(Counter *self, PyObject *text) {
    /* The native answer alone (None when it would fall back): for tests. */
    if (self->arena == NULL || !PyUnicode_Check(text)) {
        PyErr_SetString(PyExc_TypeError, "native_count() takes a str on an initialised Counter");
        return NULL;
    }
    if (PyUnicode_READY(text) < 0) return NULL;
    Py_ssize_t n = count_text(self, text);
    if (n < 0) Py_RETURN_NONE;
    return PyLong_FromSsize_t(n);
}

static PyObject *Counter_pieces(Counter *self, PyObject *text) {
    /* The split of ``text`` into pieces (ignores unknown code points): for tests against the reference pattern. */
    if (self->arena == NULL || !PyUnicode_Check(text)) {
        PyErr_SetString(PyExc_TypeError, "pieces() takes a str on an initialised Counter");
        return NULL;
    }
    if (PyUnicode_READY(text) < 0) return NULL;
    Text t = {PyUnicode_KIND(text), PyUnicode_DATA(text), PyUnicode_GET_LENGTH(text), self->classes};
    PyObject *out = PyList_New(0);
    if (out == NULL) return NULL;
    Py_ssize_t pos = 0;
    while (pos < t.n) {
        Py_ssize_t end = self->kind == KIND_O200K ? next_o200k(&t, pos) : next_cl100k(&t, pos);
        PyObject *piece = PyUnicode_Substring(text, pos, end);
        if (piece == NULL || PyList_Append(out, piece) < 0) {
            Py_XDECREF(piece);
            Py_DECREF(out);
            return NULL;
        }
        Py_DECREF(piece);
        pos = end;
    }
    return out;
}

static PyObject *Counter_get_fallbacks(Counter *self, void *closure) {
    return PyLong_FromUnsignedLongLong(self->fallbacks);
}

static PyMethodDef Counter_methods[] = {
    {"count", (PyCFunction)Counter_count, METH_O, "Tokens in a str (special-token text counted as ordinary text)."},
    {"native_count", (PyCFunction)Counter_native_count, METH_O, "The native count, or None where it falls back."},
    {"pieces", (PyCFunction)Counter_pieces, METH_O, "The pre-tokenisation split of a str."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef Counter_getset[] = {
    {"fallbacks", (getter)Counter_get_fallbacks, NULL, "texts handed to the fallback counter so far", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject CounterType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "service._tokcount.Counter",
    .tp_basicsize = sizeof(Counter),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Exact token counter for one OpenAI encoding.",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Counter_init,
    .tp_dealloc = (destructor)Counter_dealloc,
    .tp_methods = Counter_methods,
    .tp_getset = Counter_getset,
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_tokcount", "Exact, allocation-free token counts for cl100k_base and o200k_base.", -1, NULL,
};

PyMODINIT_FUNC PyInit__tokcount(void) {
    if (PyType_Ready(&CounterType) < 0) return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL) return NULL;
    Py_INCREF(&CounterType);
    if (PyModule_AddObject(m, "Counter", (PyObject *)&CounterType) < 0) {
        Py_DECREF(&CounterType);
        Py_DECREF(m);
        return NULL;
    }
    PyModule_AddIntConstant(m, "CLASS_LETTER", C_L);
    PyModule_AddIntConstant(m, "CLASS_NUMBER", C_N);
    PyModule_AddIntConstant(m, "CLASS_UPPER", C_U);
    PyModule_AddIntConstant(m, "CLASS_LOWER", C_W);
    PyModule_AddIntConstant(m, "CLASS_SPACE", C_S);
    PyModule_AddIntConstant(m, "CLASS_UNKNOWN", C_X);
    return m;
}
