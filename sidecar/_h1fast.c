/* One-call parsing of the common HTTP/1.1 messages, ahead of httptools (llhttp).
 *
 * httptools hands a message over in callbacks, one Python call per piece (message begin, url,
 * each header, head complete, body, message complete): on the sidecar's request path they
 * were the largest single block of work (callgrind, README). These functions parse the whole
 * messages the sidecar sees on nearly every request in one call, and only those: a strict
 * subset of what llhttp accepts, which both parse to the same message. Anything else (a partial
 * message, an upgrade, an unusual byte anywhere) returns None and the caller feeds the same
 * bytes to httptools as before, whose parser is then still at a message start. So every
 * error, every lenient corner and every refusal stays llhttp's and the codec's; this file can
 * only decline. tests/unit/sidecar/test_h1fast.py checks each accepted input against httptools.
 *
 * parse_request(data, start, limit) -> (end, method, url, version, headers, keep_alive, body)
 *   | None: one whole request at data[start:]: origin-form target, HTTP/1.1 or 1.0, no
 *   Transfer-Encoding or Upgrade header, at most one Content-Length (its body, whole, in data),
 *   Connection absent or one of close / keep-alive; `end` is the offset after it. `limit`
 *   bounds url + fields as the codec's on_url/on_header do (over it: None, and httptools'
 *   path refuses it).
 * parse_response(data, limit) -> (status, headers, body, keep_alive) | None
 *   `data` is exactly one whole HTTP/1.1 response: status 200-599 but 204/304, and either one
 *   Content-Length and that many body bytes or Transfer-Encoding: chunked and a chunked body
 *   without extensions or trailers (decoded), nothing after either.
 * Header names come lower-cased (str, cached and interned), values as latin-1 str.
 *
 * head_bytes(first, headers, skip, tail) -> bytes
 *   a head to send, in one allocation: sidecar/http.py's head_bytes (the same in Python).
 * traceparent(trace_id, span_id, flags) -> str, uuid4_text(raw) -> str
 *   ids as the text sent on every request: sidecar/telemetry/context.py's and
 *   sidecar/codec.py's (the same in Python).
 * encode_spans(resource, scope, spans) -> bytes | None
 *   a batch of spans as OTLP: sidecar/telemetry/otlp.py's TraceEncoder.encode, byte for byte
 *   (None for a span only that one writes).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <string.h>

static unsigned char TCHAR[256];  /* header name: RFC 9110 token */
static unsigned char VCHAR[256];  /* header value inside: VCHAR, SP, HTAB (no obs-text) */
static unsigned char UCHAR[256];  /* origin-form target: RFC 3986 pchar, '/', '?' */
static unsigned char LOWER[256];  /* ASCII lower case */

static void init_tables(void)
{
    const char *t = "!#$%&'*+-.^_`|~";
    const char *u = "-._~!$&'()*+,;=:@/?%";
    for (int c = 0; c < 256; c++) {
        int alnum = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
        TCHAR[c] = alnum || (c && strchr(t, c) != NULL);
        UCHAR[c] = alnum || (c && strchr(u, c) != NULL);
        VCHAR[c] = (c >= 0x20 && c <= 0x7e) || c == '\t';
        LOWER[c] = (c >= 'A' && c <= 'Z') ? c + 32 : c;
    }
}

/* -- header names: lower-cased once, then served from a small table ------------------------ */

/* Direct-mapped: a name takes its hash's slot, replacing what was there. The names a service
 * sends on every request stay in their slots; a flood of one-off names (the test corpus, or a
 * client sending random ones) only costs misses, never memory beyond the table. */
#define NAME_MAX_LEN 40
#define NAME_SLOTS 512

typedef struct {
    Py_ssize_t len;  /* 0: empty slot */
    char name[NAME_MAX_LEN];
    PyObject *str;
} NameSlot;

static NameSlot names[NAME_SLOTS];

#define FNV_OFFSET 2166136261u
#define FNV_PRIME 16777619u

/* A new reference to the lower-case str of a header name: `lower[0:len]` (lower-cased, all
 * TCHAR, `h` its FNV-1a hash) when len < NAME_MAX_LEN, else raw[0:len] lower-cased here; NULL
 * on error. */
static PyObject *header_name(const char *raw, const char *lower, Py_ssize_t len, uint32_t h)
{
    if (len >= NAME_MAX_LEN) {
        PyObject *s = PyUnicode_New(len, 127);
        if (s == NULL)
            return NULL;
        Py_UCS1 *out = PyUnicode_1BYTE_DATA(s);
        for (Py_ssize_t i = 0; i < len; i++)
            out[i] = LOWER[(unsigned char)raw[i]];
        return s;
    }
    NameSlot *slot = &names[h & (NAME_SLOTS - 1)];
    if (slot->len == len && memcmp(slot->name, lower, len) == 0) {
        Py_INCREF(slot->str);
        return slot->str;
    }
    PyObject *s = PyUnicode_FromStringAndSize(lower, len);
    if (s == NULL)
        return NULL;
    PyUnicode_InternInPlace(&s);
    Py_XDECREF(slot->str);
    Py_INCREF(s);  /* the table's reference */
    slot->str = s;
    slot->len = len;
    memcpy(slot->name, lower, len);
    return s;
}

/* Which of the names parse_fields looks at a lower-cased name is (NAME_OTHER: none). */
enum { NAME_OTHER, NAME_CONTENT_LENGTH, NAME_TRANSFER_ENCODING, NAME_UPGRADE, NAME_CONNECTION };

static int name_kind(const char *lower, Py_ssize_t len)
{
    switch (len) {
    case 7:
        return memcmp(lower, "upgrade", 7) == 0 ? NAME_UPGRADE : NAME_OTHER;
    case 10:
        return memcmp(lower, "connection", 10) == 0 ? NAME_CONNECTION : NAME_OTHER;
    case 14:
        return memcmp(lower, "content-length", 14) == 0 ? NAME_CONTENT_LENGTH : NAME_OTHER;
    case 17:
        return memcmp(lower, "transfer-encoding", 17) == 0 ? NAME_TRANSFER_ENCODING : NAME_OTHER;
    default:
        return NAME_OTHER;
    }
}

/* A new str of s[0:len], every byte ASCII (checked by the caller's tables). */
static PyObject *ascii_str(const char *s, Py_ssize_t len)
{
    PyObject *out = PyUnicode_New(len, 127);
    if (out != NULL)
        memcpy(PyUnicode_1BYTE_DATA(out), s, len);
    return out;
}

/* A tuple of n new references (stolen, also on failure: NULL among them fails), NULL on error. */
static PyObject *tuple_of(int n, PyObject **items)
{
    PyObject *t = NULL;
    for (int i = 0; i < n; i++) {
        if (items[i] == NULL)
            goto fail;
    }
    t = PyTuple_New(n);
    if (t == NULL)
        goto fail;
    for (int i = 0; i < n; i++)
        PyTuple_SET_ITEM(t, i, items[i]);
    return t;
fail:
    for (int i = 0; i < n; i++)
        Py_XDECREF(items[i]);
    return NULL;
}

static int lower_equals(const char *s, Py_ssize_t len, const char *lit)
{
    Py_ssize_t n = (Py_ssize_t)strlen(lit);
    if (len != n)
        return 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 'A' && c <= 'Z')
            c += 32;
        if (c != (unsigned char)lit[i])
            return 0;
    }
    return 1;
}

/* -- header fields -------------------------------------------------------------------------- */

enum { CONN_NONE = 0, CONN_CLOSE = 1, CONN_KEEP_ALIVE = 2 };

typedef struct {
    int connection;                  /* CONN_* */
    int content_lengths;             /* how many Content-Length fields */
    int chunked;                     /* one Transfer-Encoding field, of exactly "chunked" */
    const char *content_length;      /* the last one's value */
    Py_ssize_t content_length_len;
    Py_ssize_t counted;              /* url + sum(name + value + 4), as the codec counts */
} Fields;

#define MAX_FIELDS 100

/* The pairs parsed so far, released on a decline or an error. */
static void release_pairs(PyObject **pairs, int n)
{
    for (int i = 0; i < n; i++)
        Py_DECREF(pairs[i]);
}

/* Parse fields from *pos to the blank line into pairs[] (new (name, value) tuples, *count of
 * them). Returns 1 (head complete, *pos after the blank line), 0 (decline) or -1 (a Python
 * error); on 0 and -1 the caller releases the *count pairs made. `request`: a request (any
 * Transfer-Encoding declines: no chunked body on this path); else a response. */
static int parse_fields(const char **pos, const char *end, PyObject **pairs, int *count,
                        Fields *f, Py_ssize_t limit, int request)
{
    const char *p = *pos;
    for (;;) {
        if (end - p < 2)
            return 0;
        if (p[0] == '\r') {
            if (p[1] != '\n')
                return 0;
            *pos = p + 2;
            return 1;
        }
        if (*count >= MAX_FIELDS)
            return 0;
        /* the name: checked, lower-cased and hashed in one pass (a long one is only checked
         * here; its few special names are all short) */
        const char *name = p;
        char lower[NAME_MAX_LEN];
        uint32_t h = FNV_OFFSET;
        while (p < end && TCHAR[(unsigned char)*p]) {
            unsigned char c = LOWER[(unsigned char)*p];
            Py_ssize_t i = p - name;
            if (i < NAME_MAX_LEN)
                lower[i] = (char)c;
            h = (h ^ c) * FNV_PRIME;
            p++;
        }
        Py_ssize_t name_len = p - name;
        if (name_len == 0 || p >= end || *p != ':')
            return 0;
        p++;
        while (p < end && (*p == ' ' || *p == '\t'))
            p++;
        const char *value = p;
        while (p < end && VCHAR[(unsigned char)*p])
            p++;
        Py_ssize_t value_len = p - value;
        if (end - p < 2 || p[0] != '\r' || p[1] != '\n')
            return 0;
        /* an empty value, or one ending in whitespace: llhttp's reading of those is its own */
        if (value_len == 0 || value[value_len - 1] == ' ' || value[value_len - 1] == '\t')
            return 0;
        p += 2;
        f->counted += name_len + value_len + 4;
        if (f->counted > limit)
            return 0;
        switch (name_len < NAME_MAX_LEN ? name_kind(lower, name_len) : NAME_OTHER) {
        case NAME_CONTENT_LENGTH:
            f->content_lengths++;
            f->content_length = value;
            f->content_length_len = value_len;
            break;
        case NAME_TRANSFER_ENCODING:
            /* a response's one chunked coding only (none in a request on this path) */
            if (request || f->chunked || !lower_equals(value, value_len, "chunked"))
                return 0;
            f->chunked = 1;
            break;
        case NAME_UPGRADE:
            return 0;
        case NAME_CONNECTION:
            if (f->connection != CONN_NONE)
                return 0;
            if (lower_equals(value, value_len, "close"))
                f->connection = CONN_CLOSE;
            else if (lower_equals(value, value_len, "keep-alive"))
                f->connection = CONN_KEEP_ALIVE;
            else
                return 0;
            break;
        default:
            break;
        }
        PyObject *pair = PyTuple_New(2);
        if (pair == NULL)
            return -1;
        pairs[(*count)++] = pair;  /* (released with the others if what follows fails) */
        PyObject *key = header_name(name, lower, name_len, h);
        if (key == NULL)
            return -1;
        PyTuple_SET_ITEM(pair, 0, key);
        PyObject *text = ascii_str(value, value_len);
        if (text == NULL)
            return -1;
        PyTuple_SET_ITEM(pair, 1, text);
    }
}

/* The fields from *pos as a new list in *headers: 1 (taken), 0 (declined) or -1 (a Python
 * error), *headers NULL unless taken (parse_fields' result, the list owned by the caller).
 * The pairs wait on the stack and go into a list of their exact size at the end. */
static int fields_list(const char **pos, const char *end, Fields *f, Py_ssize_t limit,
                       int request, PyObject **headers)
{
    PyObject *pairs[MAX_FIELDS];
    int count = 0;
    *headers = NULL;
    int r = parse_fields(pos, end, pairs, &count, f, limit, request);
    if (r > 0) {
        *headers = PyList_New(count);
        if (*headers == NULL) {
            r = -1;
        }
        else {
            for (int i = 0; i < count; i++)
                PyList_SET_ITEM(*headers, i, pairs[i]);
            return 1;
        }
    }
    release_pairs(pairs, count);
    return r;
}

/* -- requests ------------------------------------------------------------------------------- */

/* The message's length by its Content-Length: 0 without one, -1 to decline (more than one,
 * or not 1-15 digits). */
static Py_ssize_t content_length(const Fields *f)
{
    if (f->content_lengths == 0)
        return 0;
    if (f->content_lengths != 1 || f->content_length_len < 1 || f->content_length_len > 15)
        return -1;
    Py_ssize_t length = 0;
    for (Py_ssize_t i = 0; i < f->content_length_len; i++) {
        char c = f->content_length[i];
        if (c < '0' || c > '9')
            return -1;
        length = length * 10 + (c - '0');
    }
    return length;
}

static const char *METHODS[] = {"GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH", NULL};
static PyObject *method_str[8];
static PyObject *version_11, *version_10;

static PyObject *parse_request(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    (void)self;
    if (nargs != 3 || !PyBytes_Check(args[0])) {
        PyErr_SetString(PyExc_TypeError, "parse_request(data: bytes, start: int, limit: int)");
        return NULL;
    }
    Py_ssize_t start = PyLong_AsSsize_t(args[1]);
    Py_ssize_t limit = PyLong_AsSsize_t(args[2]);
    if ((start == -1 || limit == -1) && PyErr_Occurred())
        return NULL;
    const char *base = PyBytes_AS_STRING(args[0]);
    Py_ssize_t size = PyBytes_GET_SIZE(args[0]);
    if (start < 0 || start > size)
        Py_RETURN_NONE;
    const char *p = base + start, *end = base + size;

    /* method SP */
    const char *m = p;
    while (p < end && *p >= 'A' && *p <= 'Z' && p - m < 8)
        p++;
    if (p >= end || *p != ' ')
        Py_RETURN_NONE;
    int method = -1;
    for (int i = 0; METHODS[i] != NULL; i++) {
        if ((Py_ssize_t)strlen(METHODS[i]) == p - m && memcmp(METHODS[i], m, p - m) == 0) {
            method = i;
            break;
        }
    }
    if (method < 0)
        Py_RETURN_NONE;
    p++;
    /* origin-form target SP */
    const char *url = p;
    if (p >= end || *p != '/')
        Py_RETURN_NONE;
    while (p < end && UCHAR[(unsigned char)*p])
        p++;
    Py_ssize_t url_len = p - url;
    if (p >= end || *p != ' ')
        Py_RETURN_NONE;
    p++;
    /* version CRLF */
    if (end - p < 10 || memcmp(p, "HTTP/1.", 7) != 0 || (p[7] != '1' && p[7] != '0') ||
        p[8] != '\r' || p[9] != '\n')
        Py_RETURN_NONE;
    int v11 = p[7] == '1';
    p += 10;
    Fields f = {CONN_NONE, 0, 0, NULL, 0, url_len};
    if (f.counted > limit)
        Py_RETURN_NONE;
    PyObject *headers;
    int r = fields_list(&p, end, &f, limit, 1, &headers);
    if (r <= 0) {
        if (r < 0)
            return NULL;
        Py_RETURN_NONE;
    }
    /* a body: one Content-Length, the whole of it in `data` */
    Py_ssize_t length = content_length(&f);
    if (length < 0 || end - p < length) {
        Py_DECREF(headers);
        Py_RETURN_NONE;
    }
    const char *body = p;
    p += length;
    int keep_alive = v11 ? f.connection != CONN_CLOSE : f.connection == CONN_KEEP_ALIVE;
    PyObject *version = v11 ? version_11 : version_10;
    PyObject *flag = keep_alive ? Py_True : Py_False;
    Py_INCREF(method_str[method]);
    Py_INCREF(version);
    Py_INCREF(flag);
    PyObject *items[7] = {
        PyLong_FromSsize_t(p - base), method_str[method], PyBytes_FromStringAndSize(url, url_len),
        version, headers, flag, PyBytes_FromStringAndSize(body, length),
    };
    return tuple_of(7, items);
}

/* -- responses ------------------------------------------------------------------------------ */

/* One pass over a chunked body from p to end (each chunk: 1-8 hex digits, CRLF, its bytes,
 * CRLF; no extensions; the last chunk "0" CRLF, no trailers, CRLF, and then nothing): with out
 * NULL the decoded size or -1 when the body is not exactly that, else its bytes copied. */
static Py_ssize_t chunks(const char *p, const char *end, char *out)
{
    Py_ssize_t total = 0;
    for (;;) {
        Py_ssize_t size = 0;
        int digits = 0;
        for (; p < end && digits <= 8; p++, digits++) {
            char c = *p;
            int v = (c >= '0' && c <= '9') ? c - '0'
                    : (c >= 'a' && c <= 'f') ? c - 'a' + 10
                    : (c >= 'A' && c <= 'F') ? c - 'A' + 10 : -1;
            if (v < 0)
                break;
            size = size * 16 + v;
        }
        if (digits == 0 || digits > 8 || end - p < 2 || p[0] != '\r' || p[1] != '\n')
            return -1;
        p += 2;
        if (size == 0)
            return (end - p == 2 && p[0] == '\r' && p[1] == '\n') ? total : -1;
        if (end - p < size + 2 || p[size] != '\r' || p[size + 1] != '\n')
            return -1;
        if (out != NULL)
            memcpy(out + total, p, size);
        total += size;
        p += size + 2;
    }
}

/* The decoded body (a new bytes), or NULL: declined (no error set) or a Python error. */
static PyObject *chunked_body(const char *p, const char *end)
{
    Py_ssize_t size = chunks(p, end, NULL);
    if (size < 0)
        return NULL;
    PyObject *body = PyBytes_FromStringAndSize(NULL, size);
    if (body != NULL)
        chunks(p, end, PyBytes_AS_STRING(body));
    return body;
}

static PyObject *parse_response(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    (void)self;
    if (nargs != 2 || !PyBytes_Check(args[0])) {
        PyErr_SetString(PyExc_TypeError, "parse_response(data: bytes, limit: int)");
        return NULL;
    }
    Py_ssize_t limit = PyLong_AsSsize_t(args[1]);
    if (limit == -1 && PyErr_Occurred())
        return NULL;
    const char *base = PyBytes_AS_STRING(args[0]);
    const char *p = base, *end = base + PyBytes_GET_SIZE(args[0]);
    /* "HTTP/1.1" SP 3DIGIT SP reason CRLF (a reason of at least one visible character) */
    if (end - p < 15 || memcmp(p, "HTTP/1.1 ", 9) != 0)
        Py_RETURN_NONE;
    p += 9;
    if (p[0] < '2' || p[0] > '5' || p[1] < '0' || p[1] > '9' || p[2] < '0' || p[2] > '9' ||
        p[3] != ' ')
        Py_RETURN_NONE;
    int status = (p[0] - '0') * 100 + (p[1] - '0') * 10 + (p[2] - '0');
    if (status == 204 || status == 304)
        Py_RETURN_NONE;
    p += 4;
    const char *reason = p;
    while (p < end && VCHAR[(unsigned char)*p])
        p++;
    if (p == reason || reason[0] == ' ' || reason[0] == '\t' || end - p < 2 || p[0] != '\r' ||
        p[1] != '\n')
        Py_RETURN_NONE;
    p += 2;
    Fields f = {CONN_NONE, 0, 0, NULL, 0, 0};
    PyObject *headers;
    int r = fields_list(&p, end, &f, limit, 0, &headers);
    if (r <= 0) {
        if (r < 0)
            return NULL;
        Py_RETURN_NONE;
    }
    /* chunked (and no Content-Length beside it), or one Content-Length of 1-15 digits and
     * exactly that many bytes left */
    PyObject *body = NULL;
    if (f.chunked) {
        if (f.content_lengths == 0)
            body = chunked_body(p, end);
    }
    else {
        Py_ssize_t length = f.content_lengths == 1 ? content_length(&f) : -1;
        if (length >= 0 && end - p == length)
            body = PyBytes_FromStringAndSize(p, length);
    }
    if (body == NULL) {
        Py_DECREF(headers);
        if (PyErr_Occurred())
            return NULL;
        Py_RETURN_NONE;
    }
    PyObject *flag = f.connection == CONN_CLOSE ? Py_False : Py_True;
    Py_INCREF(flag);
    PyObject *items[4] = {PyLong_FromLong(status), headers, body, flag};
    return tuple_of(4, items);
}

/* -- serialising a head ---------------------------------------------------------------------- */

/* Append the latin-1 bytes of str `s` at *out (chars above U+00FF as '?', as str.encode(
 * "latin-1", "replace") does); with out NULL, only count them. */
static Py_ssize_t put_latin1(PyObject *s, char **out)
{
    Py_ssize_t n = PyUnicode_GET_LENGTH(s);
    if (*out == NULL)
        return n;
    int kind = PyUnicode_KIND(s);
    if (kind == PyUnicode_1BYTE_KIND) {
        memcpy(*out, PyUnicode_1BYTE_DATA(s), n);
    }
    else {
        const void *data = PyUnicode_DATA(s);
        for (Py_ssize_t i = 0; i < n; i++) {
            Py_UCS4 c = PyUnicode_READ(kind, data, i);
            (*out)[i] = c <= 0xff ? (char)c : '?';
        }
    }
    *out += n;
    return n;
}

/* One pass of head_bytes: count (out NULL; `keep[i]` set for the pairs written) or write the
 * pairs kept. -1 on error (a TypeError set). */
static Py_ssize_t put_head(PyObject *first, PyObject *fields, PyObject *skip, PyObject *tail,
                           char *out, unsigned char *keep)
{
    Py_ssize_t total = put_latin1(first, &out);
    Py_ssize_t n = PySequence_Fast_GET_SIZE(fields);
    PyObject **items = PySequence_Fast_ITEMS(fields);
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *pair = items[i];
        if (out == NULL) {
            if (!PyTuple_Check(pair) || PyTuple_GET_SIZE(pair) != 2 ||
                !PyUnicode_Check(PyTuple_GET_ITEM(pair, 0)) ||
                !PyUnicode_Check(PyTuple_GET_ITEM(pair, 1))) {
                PyErr_SetString(PyExc_TypeError, "head_bytes: headers must be (str, str) pairs");
                return -1;
            }
            if (PyUnicode_READY(PyTuple_GET_ITEM(pair, 0)) < 0 ||
                PyUnicode_READY(PyTuple_GET_ITEM(pair, 1)) < 0)
                return -1;
            int skipped = PySet_Contains(skip, PyTuple_GET_ITEM(pair, 0));
            if (skipped < 0)
                return -1;
            keep[i] = !skipped;
        }
        if (!keep[i])
            continue;
        total += put_latin1(PyTuple_GET_ITEM(pair, 0), &out);
        if (out != NULL) {
            memcpy(out, ": ", 2);
            out += 2;
        }
        total += 2 + put_latin1(PyTuple_GET_ITEM(pair, 1), &out);
        if (out != NULL) {
            memcpy(out, "\r\n", 2);
            out += 2;
        }
        total += 2;
    }
    return total + put_latin1(tail, &out);
}

static PyObject *head_bytes(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    (void)self;
    if (nargs != 4 || !PyUnicode_Check(args[0]) || !PyAnySet_Check(args[2]) ||
        !PyUnicode_Check(args[3])) {
        PyErr_SetString(PyExc_TypeError,
                        "head_bytes(first: str, headers, skip: frozenset, tail: str)");
        return NULL;
    }
    if (PyUnicode_READY(args[0]) < 0 || PyUnicode_READY(args[3]) < 0)
        return NULL;
    /* a tuple as it is, anything else copied into one: nothing can change it between the
     * passes (a str subclass's __hash__ runs Python code in the first) */
    PyObject *fields = PySequence_Tuple(args[1]);
    if (fields == NULL)
        return NULL;
    unsigned char small[64];
    Py_ssize_t n = PySequence_Fast_GET_SIZE(fields);
    unsigned char *keep = n <= 64 ? small : PyMem_Malloc(n);
    PyObject *result = NULL;
    if (keep == NULL) {
        PyErr_NoMemory();
    }
    else {
        Py_ssize_t size = put_head(args[0], fields, args[2], args[3], NULL, keep);
        if (size >= 0) {
            result = PyBytes_FromStringAndSize(NULL, size);
            if (result != NULL)
                put_head(args[0], fields, args[2], args[3], PyBytes_AS_STRING(result), keep);
        }
        if (keep != small)
            PyMem_Free(keep);
    }
    Py_DECREF(fields);
    return result;
}

/* -- ids as text ------------------------------------------------------------------------------ */

static const char HEX[] = "0123456789abcdef";

static char *put_hex(char *out, const unsigned char *raw, Py_ssize_t n)
{
    for (Py_ssize_t i = 0; i < n; i++) {
        *out++ = HEX[raw[i] >> 4];
        *out++ = HEX[raw[i] & 15];
    }
    return out;
}

/* traceparent(trace_id, span_id, flags) -> "00-<trace_id hex>-<span_id hex>-<flags, 2 hex>":
 * sidecar/telemetry/context.py's _format_traceparent (the same in Python), flags 0-255. */
static PyObject *traceparent(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    (void)self;
    if (nargs != 3 || !PyBytes_Check(args[0]) || !PyBytes_Check(args[1]) ||
        !PyLong_Check(args[2])) {
        PyErr_SetString(PyExc_TypeError, "traceparent(trace_id: bytes, span_id: bytes, flags: int)");
        return NULL;
    }
    long flags = PyLong_AsLong(args[2]);
    if (flags == -1 && PyErr_Occurred())
        return NULL;
    if (flags < 0 || flags > 255) {
        PyErr_SetString(PyExc_ValueError, "traceparent: flags must be 0-255");
        return NULL;
    }
    Py_ssize_t trace_len = PyBytes_GET_SIZE(args[0]), span_len = PyBytes_GET_SIZE(args[1]);
    PyObject *text = PyUnicode_New(2 * trace_len + 2 * span_len + 7, 127);
    if (text == NULL)
        return NULL;
    char *out = (char *)PyUnicode_1BYTE_DATA(text);
    memcpy(out, "00-", 3);
    out = put_hex(out + 3, (const unsigned char *)PyBytes_AS_STRING(args[0]), trace_len);
    *out++ = '-';
    out = put_hex(out, (const unsigned char *)PyBytes_AS_STRING(args[1]), span_len);
    *out++ = '-';
    *out++ = HEX[flags >> 4];
    *out = HEX[flags & 15];
    return text;
}

/* uuid4_text(raw) -> str: one version-4 UUID string (36 characters) per 16 bytes of `raw`,
 * concatenated: the hex digits in order, the 13th digit replaced by the version (4) and the
 * 17th by the variant, "89ab"[digit & 3]. sidecar/codec.py's _uuid_text (the same in Python). */
static PyObject *uuid4_text(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    (void)self;
    if (nargs != 1 || !PyBytes_Check(args[0]) || PyBytes_GET_SIZE(args[0]) % 16 != 0) {
        PyErr_SetString(PyExc_TypeError, "uuid4_text(raw: bytes of a multiple of 16)");
        return NULL;
    }
    Py_ssize_t count = PyBytes_GET_SIZE(args[0]) / 16;
    const unsigned char *raw = (const unsigned char *)PyBytes_AS_STRING(args[0]);
    PyObject *text = PyUnicode_New(36 * count, 127);
    if (text == NULL)
        return NULL;
    char *out = (char *)PyUnicode_1BYTE_DATA(text);
    for (Py_ssize_t k = 0; k < count; k++, raw += 16) {
        char digits[32];
        put_hex(digits, raw, 16);
        digits[12] = '4';
        digits[16] = "89ab"[(raw[8] >> 4) & 3];
        memcpy(out, digits, 8);
        out[8] = '-';
        memcpy(out + 9, digits + 8, 4);
        out[13] = '-';
        memcpy(out + 14, digits + 12, 4);
        out[18] = '-';
        memcpy(out + 19, digits + 16, 4);
        out[23] = '-';
        memcpy(out + 24, digits + 20, 12);
        out += 36;
    }
    return text;
}

/* -- OTLP spans ----------------------------------------------------------------------------- */

/* A growable buffer (PyMem); every write reserves its room first. */
typedef struct {
    char *data;
    Py_ssize_t len, cap;
} Buf;

static int buf_reserve(Buf *b, Py_ssize_t more)
{
    if (b->len + more <= b->cap)
        return 0;
    Py_ssize_t cap = b->cap ? b->cap : 4096;
    while (cap < b->len + more)
        cap *= 2;
    char *data = PyMem_Realloc(b->data, cap);
    if (data == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    b->data = data;
    b->cap = cap;
    return 0;
}

static Py_ssize_t varint_len(unsigned long long v)
{
    Py_ssize_t n = 1;
    while (v > 0x7f) {
        v >>= 7;
        n++;
    }
    return n;
}

static inline char *put_varint(char *p, unsigned long long v)
{
    while (v > 0x7f) {
        *p++ = (char)((v & 0x7f) | 0x80);
        v >>= 7;
    }
    *p++ = (char)v;
    return p;
}

static inline char *put_fixed64(char *p, unsigned long long v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (char)(v >> (8 * i));
    return p + 8;
}

/* tag, length, payload; the caller reserved len + 11 bytes */
static inline char *put_field(char *p, unsigned char tag, const char *data, Py_ssize_t len)
{
    *p++ = (char)tag;
    p = put_varint(p, (unsigned long long)len);
    memcpy(p, data, len);
    return p + len;
}

/* The UTF-8 of a str (exact str only; NULL with no error set: decline, e.g. a lone surrogate,
 * which the Python encoder writes as '?'). */
static const char *utf8_of(PyObject *s, Py_ssize_t *len)
{
    if (!PyUnicode_CheckExact(s))
        return NULL;
    const char *data = PyUnicode_AsUTF8AndSize(s, len);
    if (data == NULL)
        PyErr_Clear();
    return data;
}

/* One attribute as KeyValue in a repeated field 9 (otlp.py's _field(b"\x4a", _key_value(..))):
 * 1, 0 to decline (an unusual value type, an int beyond 64 bits, a str that is not UTF-8), -1
 * on a Python error. */
static int put_attribute(Buf *b, PyObject *key, PyObject *value)
{
    Py_ssize_t key_len;
    const char *key_data = utf8_of(key, &key_len);
    if (key_data == NULL)
        return 0;
    char any[16];  /* a varint or fixed64 AnyValue (not a str) */
    Py_ssize_t any_len;
    const char *str_data = NULL;
    Py_ssize_t str_len = 0;
    if (PyBool_Check(value)) {
        any[0] = 0x10;
        any[1] = value == Py_True;
        any_len = 2;
    }
    else if (PyLong_CheckExact(value)) {
        int overflow;
        long long v = PyLong_AsLongLongAndOverflow(value, &overflow);
        if (overflow != 0 || (v == -1 && PyErr_Occurred())) {
            PyErr_Clear();
            return 0;
        }
        any[0] = 0x18;  /* (negative: its 64-bit two's complement, 10 bytes) */
        any_len = put_varint(any + 1, (unsigned long long)v) - any;
    }
    else if (PyFloat_CheckExact(value)) {
        double d = PyFloat_AS_DOUBLE(value);
        unsigned long long bits;
        memcpy(&bits, &d, 8);
        any[0] = 0x21;
        put_fixed64(any + 1, bits);
        any_len = 9;
    }
    else if (PyUnicode_CheckExact(value)) {
        str_data = utf8_of(value, &str_len);
        if (str_data == NULL)
            return 0;
        any_len = 1 + varint_len((unsigned long long)str_len) + str_len;
    }
    else {
        return 0;
    }
    Py_ssize_t kv_len = 1 + varint_len((unsigned long long)key_len) + key_len + 1 +
                        varint_len((unsigned long long)any_len) + any_len;
    if (buf_reserve(b, kv_len + 11) < 0)
        return -1;
    char *p = b->data + b->len;
    *p++ = 0x4a;
    p = put_varint(p, (unsigned long long)kv_len);
    p = put_field(p, 0x0a, key_data, key_len);
    *p++ = 0x12;
    p = put_varint(p, (unsigned long long)any_len);
    if (str_data != NULL) {
        p = put_field(p, 0x0a, str_data, str_len);
    }
    else {
        memcpy(p, any, any_len);
        p += any_len;
    }
    b->len = p - b->data;
    return 1;
}

/* One Span (otlp.py's TraceEncoder._span, field by field) at the end of `b`: 1, 0 to decline,
 * -1 on a Python error. */
static int put_span(Buf *b, PyObject *span)
{
    if (!PyTuple_Check(span) || PyTuple_GET_SIZE(span) < 12)
        return 0;
    PyObject *trace_id = PyTuple_GET_ITEM(span, 0), *span_id = PyTuple_GET_ITEM(span, 1);
    PyObject *parent = PyTuple_GET_ITEM(span, 2), *name = PyTuple_GET_ITEM(span, 3);
    PyObject *attributes = PyTuple_GET_ITEM(span, 9), *tracestate = PyTuple_GET_ITEM(span, 10);
    PyObject *message = PyTuple_GET_ITEM(span, 11);
    if (!PyBytes_CheckExact(trace_id) || PyBytes_GET_SIZE(trace_id) != 16 ||
        !PyBytes_CheckExact(span_id) || PyBytes_GET_SIZE(span_id) != 8 ||
        !PyBytes_CheckExact(parent) ||
        (PyBytes_GET_SIZE(parent) != 0 && PyBytes_GET_SIZE(parent) != 8) ||
        !PyDict_CheckExact(attributes))
        return 0;
    long long numbers[5];  /* kind, start_ns, end_ns, flags, status */
    const int at[5] = {4, 5, 6, 7, 8};
    for (int i = 0; i < 5; i++) {
        PyObject *item = PyTuple_GET_ITEM(span, at[i]);
        if (!PyLong_CheckExact(item))
            return 0;
        int overflow;
        numbers[i] = PyLong_AsLongLongAndOverflow(item, &overflow);
        if (overflow != 0 || numbers[i] < 0 || (numbers[i] == -1 && PyErr_Occurred())) {
            PyErr_Clear();
            return 0;
        }
    }
    long long kind = numbers[0], status = numbers[4];
    if (kind > 127 || status > 127)
        return 0;
    Py_ssize_t name_len, state_len, message_len;
    const char *name_data = utf8_of(name, &name_len);
    const char *state_data = utf8_of(tracestate, &state_len);
    const char *message_data = utf8_of(message, &message_len);
    if (name_data == NULL || state_data == NULL || message_data == NULL)
        return 0;
    if (buf_reserve(b, 64 + state_len + name_len) < 0)
        return -1;
    char *p = b->data + b->len;
    *p++ = 0x0a;
    *p++ = 0x10;
    memcpy(p, PyBytes_AS_STRING(trace_id), 16);
    p += 16;
    *p++ = 0x12;
    *p++ = 0x08;
    memcpy(p, PyBytes_AS_STRING(span_id), 8);
    p += 8;
    if (state_len)
        p = put_field(p, 0x1a, state_data, state_len);
    unsigned long long flags = (unsigned long long)numbers[3] & 0xff;
    if (PyBytes_GET_SIZE(parent)) {
        *p++ = 0x22;
        *p++ = 0x08;
        memcpy(p, PyBytes_AS_STRING(parent), 8);
        p += 8;
        flags |= 0x100 | 0x200;  /* has is_remote, parent is remote (in the app) */
    }
    p = put_field(p, 0x2a, name_data, name_len);
    *p++ = 0x30;
    *p++ = (char)kind;
    *p++ = 0x39;
    p = put_fixed64(p, (unsigned long long)numbers[1]);
    *p++ = 0x41;
    p = put_fixed64(p, (unsigned long long)numbers[2]);
    b->len = p - b->data;
    Py_ssize_t pos = 0;
    PyObject *key, *value;
    while (PyDict_Next(attributes, &pos, &key, &value)) {
        int r = put_attribute(b, key, value);
        if (r <= 0)
            return r;
    }
    if (buf_reserve(b, 32 + message_len) < 0)
        return -1;
    p = b->data + b->len;
    if (status || message_len) {
        Py_ssize_t inner = 2 + (message_len
                                    ? 1 + varint_len((unsigned long long)message_len) + message_len
                                    : 0);
        *p++ = 0x7a;
        p = put_varint(p, (unsigned long long)inner);
        if (message_len)
            p = put_field(p, 0x12, message_data, message_len);
        *p++ = 0x18;
        *p++ = (char)status;
    }
    *p++ = (char)0x85;
    *p++ = 0x01;
    for (int i = 0; i < 4; i++)
        *p++ = (char)(flags >> (8 * i));
    b->len = p - b->data;
    return 1;
}

/* encode_spans(resource, scope, spans) -> bytes | None: otlp.py's TraceEncoder.encode of
 * `spans` (SpanRecords), `resource` and `scope` its encoded fields; None to decline (a span
 * with what only the Python encoder writes, e.g. a lone surrogate). Each span is written to a
 * scratch buffer, then appended after its length; the request's headers go on at the end. */
static PyObject *encode_spans(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    (void)self;
    if (nargs != 3 || !PyBytes_Check(args[0]) || !PyBytes_Check(args[1]) ||
        !PyList_CheckExact(args[2])) {
        PyErr_SetString(PyExc_TypeError, "encode_spans(resource: bytes, scope: bytes, spans: list)");
        return NULL;
    }
    PyObject *spans = args[2], *out = NULL;
    Buf body = {NULL, 0, 0}, one = {NULL, 0, 0};
    int r = 1;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(spans) && r > 0; i++) {
        one.len = 0;
        r = put_span(&one, PyList_GET_ITEM(spans, i));
        if (r > 0 && buf_reserve(&body, one.len + 11) < 0)
            r = -1;
        if (r > 0) {
            char *p = body.data + body.len;
            *p++ = 0x12;
            p = put_varint(p, (unsigned long long)one.len);
            memcpy(p, one.data, one.len);
            body.len = p + one.len - body.data;
        }
    }
    if (r > 0) {
        /* ResourceSpans{resource=1, scope_spans=2} inside ExportTraceServiceRequest{1} */
        Py_ssize_t resource = PyBytes_GET_SIZE(args[0]), scope = PyBytes_GET_SIZE(args[1]);
        Py_ssize_t scope_spans = scope + body.len;
        Py_ssize_t resource_spans = resource + 1 + varint_len(scope_spans) + scope_spans;
        out = PyBytes_FromStringAndSize(
            NULL, 1 + varint_len((unsigned long long)resource_spans) + resource_spans);
        if (out != NULL) {
            char *p = PyBytes_AS_STRING(out);
            *p++ = 0x0a;
            p = put_varint(p, (unsigned long long)resource_spans);
            memcpy(p, PyBytes_AS_STRING(args[0]), resource);
            p += resource;
            *p++ = 0x12;
            p = put_varint(p, (unsigned long long)scope_spans);
            memcpy(p, PyBytes_AS_STRING(args[1]), scope);
            p += scope;
            if (body.len)
                memcpy(p, body.data, body.len);
        }
    }
    PyMem_Free(body.data);
    PyMem_Free(one.data);
    if (r == 0) {
        Py_RETURN_NONE;
    }
    return out;
}

static PyMethodDef methods[] = {
    {"head_bytes", (PyCFunction)(void (*)(void))head_bytes, METH_FASTCALL,
     "head_bytes(first, headers, skip, tail): first + the (name, value) pairs whose name is not "
     "in skip as 'name: value\\r\\n' lines + tail, encoded latin-1 ('?' for what is not)"},
    {"parse_request", (PyCFunction)(void (*)(void))parse_request, METH_FASTCALL,
     "parse_request(data, start, limit): one common request head, or None (see the file)"},
    {"parse_response", (PyCFunction)(void (*)(void))parse_response, METH_FASTCALL,
     "parse_response(data, limit): one whole common response, or None (see the file)"},
    {"traceparent", (PyCFunction)(void (*)(void))traceparent, METH_FASTCALL,
     "traceparent(trace_id, span_id, flags): a version-00 traceparent (flags 0-255)"},
    {"encode_spans", (PyCFunction)(void (*)(void))encode_spans, METH_FASTCALL,
     "encode_spans(resource, scope, spans): an OTLP ExportTraceServiceRequest, or None"},
    {"uuid4_text", (PyCFunction)(void (*)(void))uuid4_text, METH_FASTCALL,
     "uuid4_text(raw): one version-4 UUID string per 16 bytes of raw, concatenated"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "sidecar._h1fast", NULL, -1, methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__h1fast(void)
{
    init_tables();
    for (int i = 0; METHODS[i] != NULL; i++) {
        method_str[i] = PyUnicode_InternFromString(METHODS[i]);
        if (method_str[i] == NULL)
            return NULL;
    }
    version_11 = PyUnicode_InternFromString("1.1");
    version_10 = PyUnicode_InternFromString("1.0");
    if (version_11 == NULL || version_10 == NULL)
        return NULL;
    return PyModule_Create(&module);
}
