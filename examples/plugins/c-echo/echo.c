/*
 * c-echo: a corral plugin in C11 with nothing but libc, written from
 * protocol/PROTOCOL.md alone.
 *
 * Methods (input and output are raw bytes; corral's clients send JSON):
 *   echo     the input, unchanged
 *   reverse  the input bytes in reverse order (byte-wise, so a multi-byte
 *            UTF-8 character comes out reversed too)
 *   upper    the input with ASCII a-z turned into A-Z, other bytes unchanged
 *   info     {"protocol_version":V,"max_frame":M,"calls":N}: the version the
 *            host chose, Init.max_frame, and how many calls this process has
 *            received, this one included
 *   anything else: an Err reply with code "unknown_method"
 *
 * Calls are served one at a time, in order (PROTOCOL.md section 5 allows
 * it). Every call read is answered before the next frame is parsed, so a
 * Cancel always names a call that is already answered (or was never ours)
 * and is ignored.
 *
 * Exit status: 0 on Shutdown and on end of stream between frames; 76
 * (EX_PROTOCOL) on a frame that does not decode, exceeds the limit in force
 * or ends inside the frame, or on an Init this plugin cannot work with; 74
 * (EX_IOERR) when the channel fails otherwise. After a protocol error
 * nothing more is written to the channel; the reason goes to stderr, which
 * the host logs.
 *
 * Memory: two static buffers sized by OUR_MAX_FRAME. No length read from
 * the wire sizes an allocation; every length is checked against the bytes
 * left in its frame before it is used.
 */
#define _POSIX_C_SOURCE 200809L

#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define PLUGIN_NAME "c-echo"
#define PLUGIN_VERSION "0.1.0"
#define PROTOCOL_VERSION 1u
#define PROTOCOL_VERSION_TEXT "1"

#define CHANNEL_FD 3
#define EX_IOERR 74
#define EX_PROTOCOL 76

/* Both Hello and Init must fit in this before a limit is negotiated. */
#define HANDSHAKE_MAX_FRAME (1u << 20)
/* What we announce in Hello.max_frame: the largest payload we accept. */
#define OUR_MAX_FRAME (1u << 20)
/*
 * The smallest Init.max_frame we work with. PROTOCOL.md sets no floor, but
 * below this our fixed-size frames (the start-up Log, the Err replies) may
 * not fit, and a call could then get no reply at all.
 */
#define MIN_MAX_FRAME 256u

/* rbuf and wbuf are sized by OUR_MAX_FRAME, so no limit may exceed it. */
_Static_assert(HANDSHAKE_MAX_FRAME <= OUR_MAX_FRAME, "the handshake limit must fit our buffers");

#define FRAME_PREFIX 4u

/* PluginMessage variant indices (PROTOCOL.md section 4). */
enum plugin_message {
    PM_HELLO = 0,
    PM_READY = 1,
    PM_REPLY = 2,
    PM_LOG = 3,
    PM_PONG = 5,
};

/* HostMessage variant indices. */
enum host_message {
    HM_INIT = 0,
    HM_CALL = 1,
    HM_CANCEL = 2,
    HM_PING = 3,
    HM_SHUTDOWN = 4,
    HM_PONG = 5,
};

enum call_result { CR_OK = 0, CR_ERR = 1 };
enum log_level { LOG_INFO = 2 };

/* The limit in force for frames both ways: the handshake's until Init. */
static uint32_t max_frame = HANDSHAKE_MAX_FRAME;

static _Noreturn void protocol_error(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fputs(PLUGIN_NAME ": protocol error: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(EX_PROTOCOL);
}

static _Noreturn void io_error(const char *what) {
    fprintf(stderr, PLUGIN_NAME ": %s on the channel: %s\n", what, strerror(errno));
    exit(EX_IOERR);
}

/* ------------------------------------------------------------------ */
/* Writing. Frames are built straight into wbuf and written in batches: */
/* pending frames go out when we are about to wait for input, so the    */
/* replies to calls that arrived together leave with one write.         */

static unsigned char wbuf[2 * (FRAME_PREFIX + OUR_MAX_FRAME)];
static size_t wlen;        /* bytes of complete frames waiting to be written */
static size_t frame_start; /* where the frame being built begins */
static size_t frame_pos;   /* where its next byte goes */

static void flush(void) {
    size_t done = 0;
    while (done < wlen) {
        ssize_t n = write(CHANNEL_FD, wbuf + done, wlen - done);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n < 0 && (errno == EPIPE || errno == ECONNRESET)) {
            /* The host is gone: the same as end of stream (section 5). */
            exit(0);
        }
        if (n <= 0) {
            io_error("write");
        }
        done += (size_t)n;
    }
    wlen = 0;
}

/* Room for `n` more payload bytes in the frame being built, or exit: the
 * callers size every frame against max_frame first, so this is a bug. */
static unsigned char *reserve(size_t n) {
    size_t payload = frame_pos - frame_start - FRAME_PREFIX;
    if (n > max_frame - payload) {
        fprintf(stderr, PLUGIN_NAME ": bug: a frame outgrew max_frame\n");
        exit(EXIT_FAILURE);
    }
    unsigned char *p = wbuf + frame_pos;
    frame_pos += n;
    return p;
}

static void put_le(uint64_t v, unsigned width) {
    unsigned char *p = reserve(width);
    for (unsigned i = 0; i < width; i++) {
        p[i] = (unsigned char)(v >> (8 * i));
    }
}

static void put_raw(const void *src, size_t n) {
    if (n > 0) {
        memcpy(reserve(n), src, n);
    }
}

/* `bytes` and `string`: u64 length, then the bytes. */
static void put_bytes(const void *src, size_t n) {
    put_le(n, 8);
    put_raw(src, n);
}

static void put_str(const char *s) { put_bytes(s, strlen(s)); }

/* Encoded size of a `string` field. */
static size_t str_size(const char *s) { return 8 + strlen(s); }

static void begin_frame(uint32_t variant) {
    /* Keep room for one frame of the largest size allowed. */
    if (sizeof wbuf - wlen < FRAME_PREFIX + (size_t)max_frame) {
        flush();
    }
    frame_start = wlen;
    frame_pos = wlen + FRAME_PREFIX;
    put_le(variant, 4);
}

static void end_frame(void) {
    uint32_t len = (uint32_t)(frame_pos - frame_start - FRAME_PREFIX);
    for (unsigned i = 0; i < 4; i++) {
        wbuf[frame_start + i] = (unsigned char)(len >> (8 * i));
    }
    wlen = frame_pos;
}

/* ------------------------------------------------------------------ */
/* Reading. The channel is a byte stream: rbuf holds what has arrived,  */
/* and whole frames are taken out of it. It is large enough for one     */
/* frame of the largest size we ever accept.                            */

static unsigned char rbuf[FRAME_PREFIX + OUR_MAX_FRAME];
static size_t rstart, rend; /* unconsumed bytes are rbuf[rstart..rend) */

/* A view of one frame's payload, consumed front to back. */
struct cursor {
    const unsigned char *p;
    size_t left;
    bool bad; /* a field ran past the end of the payload */
};

static uint32_t le32(const unsigned char *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* The next frame's payload, or false at end of stream between frames. */
static bool next_frame(struct cursor *c) {
    for (;;) {
        size_t avail = rend - rstart;
        if (avail >= FRAME_PREFIX) {
            uint32_t len = le32(rbuf + rstart);
            /* Checked before waiting for the payload: a peer can never make
             * us hold more than the limit. */
            if (len > max_frame) {
                protocol_error("a frame of %" PRIu32 " bytes exceeds the limit of %" PRIu32, len,
                               max_frame);
            }
            if (avail - FRAME_PREFIX >= len) {
                c->p = rbuf + rstart + FRAME_PREFIX;
                c->left = len;
                c->bad = false;
                rstart += FRAME_PREFIX + len;
                return true;
            }
        }
        /* No whole frame is buffered: send what we owe, then wait. */
        flush();
        if (rstart > 0) {
            memmove(rbuf, rbuf + rstart, avail);
            rstart = 0;
            rend = avail;
        }
        /* Never full here: a partial frame is shorter than the prefix plus
         * max_frame, which is at most sizeof rbuf. */
        ssize_t n = read(CHANNEL_FD, rbuf + rend, sizeof rbuf - rend);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n < 0 && errno == ECONNRESET) {
            n = 0; /* the host is gone: the same as end of stream */
        }
        if (n < 0) {
            io_error("read");
        }
        if (n == 0) {
            if (avail == 0) {
                return false;
            }
            protocol_error("end of stream inside a frame (%zu bytes of it arrived)", avail);
        }
        rend += (size_t)n;
    }
}

static uint64_t get_le(struct cursor *c, unsigned width) {
    if (c->bad || c->left < width) {
        c->bad = true;
        return 0;
    }
    uint64_t v = 0;
    for (unsigned i = 0; i < width; i++) {
        v |= (uint64_t)c->p[i] << (8 * i);
    }
    c->p += width;
    c->left -= width;
    return v;
}

/* A `bytes` field: its length is a claim, checked against what is left. */
static const unsigned char *get_bytes(struct cursor *c, size_t *len) {
    uint64_t n = get_le(c, 8);
    if (c->bad || n > c->left) {
        c->bad = true;
        *len = 0;
        return c->p;
    }
    const unsigned char *p = c->p;
    c->p += n;
    c->left -= (size_t)n;
    *len = (size_t)n;
    return p;
}

/* Well-formed UTF-8 (RFC 3629): no overlong forms, no surrogates, nothing
 * above U+10FFFF. */
static bool utf8_valid(const unsigned char *s, size_t n) {
    size_t i = 0;
    while (i < n) {
        unsigned char b = s[i];
        size_t extra;
        uint32_t cp, min;
        if (b < 0x80) {
            i++;
            continue;
        } else if (b >= 0xC2 && b <= 0xDF) {
            extra = 1, cp = b & 0x1Fu, min = 0x80;
        } else if (b >= 0xE0 && b <= 0xEF) {
            extra = 2, cp = b & 0x0Fu, min = 0x800;
        } else if (b >= 0xF0 && b <= 0xF4) {
            extra = 3, cp = b & 0x07u, min = 0x10000;
        } else {
            return false;
        }
        if (n - i - 1 < extra) {
            return false;
        }
        for (size_t k = 1; k <= extra; k++) {
            unsigned char cont = s[i + k];
            if ((cont & 0xC0) != 0x80) {
                return false;
            }
            cp = cp << 6 | (cont & 0x3Fu);
        }
        if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) {
            return false;
        }
        i += extra + 1;
    }
    return true;
}

/* A `string` field: a `bytes` field that must be valid UTF-8. */
static const unsigned char *get_str(struct cursor *c, size_t *len) {
    const unsigned char *p = get_bytes(c, len);
    if (!c->bad && !utf8_valid(p, *len)) {
        c->bad = true;
    }
    return p;
}

/* The message must have decoded and used the whole payload. */
static void expect_end(const struct cursor *c, const char *what) {
    if (c->bad) {
        protocol_error("%s: a field runs past the end of the frame or is not valid UTF-8", what);
    }
    if (c->left != 0) {
        protocol_error("%s: %zu bytes left over after the message", what, c->left);
    }
}

/* ------------------------------------------------------------------ */
/* Messages we send.                                                   */

static void send_hello(void) {
    begin_frame(PM_HELLO);
    put_raw("CRRL", 4);
    put_le(1, 8); /* versions: one element */
    put_le(PROTOCOL_VERSION, 2);
    put_str(PLUGIN_NAME);
    put_str(PLUGIN_VERSION);
    put_le(OUR_MAX_FRAME, 4);
    end_frame();
}

static void send_log_started(void) {
    char frame_text[16];
    snprintf(frame_text, sizeof frame_text, "%" PRIu32, max_frame);
    begin_frame(PM_LOG);
    put_le(LOG_INFO, 4);
    put_str(PLUGIN_NAME " " PLUGIN_VERSION " started");
    put_le(2, 8); /* fields: two (key, value) pairs */
    put_str("protocol_version");
    put_str(PROTOCOL_VERSION_TEXT);
    put_str("max_frame");
    put_str(frame_text);
    end_frame();
}

/* Reply header: variant, id, CallResult variant. */
#define REPLY_HEAD (4u + 8u + 4u)

static void reply_err(uint64_t id, const char *code, const char *message) {
    begin_frame(PM_REPLY);
    put_le(id, 8);
    put_le(CR_ERR, 4);
    put_str(code);
    put_str(message);
    end_frame();
}

/* At most REPLY_HEAD + (8 + 15) + (8 + 127) bytes whatever the numbers,
 * so it always fits (the assertion below), unlike the output it replaces. */
#define TOO_LARGE_MESSAGE_MAX 128u
_Static_assert(REPLY_HEAD + 8u + 15u + 8u + TOO_LARGE_MESSAGE_MAX <= MIN_MAX_FRAME,
               "an Err reply must fit in the smallest max_frame we accept");
static void reply_too_large(uint64_t id, size_t output_len) {
    char message[TOO_LARGE_MESSAGE_MAX];
    snprintf(message, sizeof message,
             "the output of %zu bytes does not fit in a frame of at most %" PRIu32 " bytes",
             output_len, max_frame);
    reply_err(id, "reply_too_large", message);
}

/*
 * Starts an Ok reply whose output is `len` bytes and returns where they
 * go, or answers with reply_too_large and returns NULL.
 */
static unsigned char *begin_reply_ok(uint64_t id, size_t len) {
    if (len > max_frame - (REPLY_HEAD + 8u)) {
        reply_too_large(id, len);
        return NULL;
    }
    begin_frame(PM_REPLY);
    put_le(id, 8);
    put_le(CR_OK, 4);
    put_le(len, 8);
    return reserve(len);
}

/* ------------------------------------------------------------------ */
/* Methods.                                                            */

static uint64_t calls; /* Calls received, for `info` */

static bool method_is(const unsigned char *m, size_t len, const char *name) {
    return len == strlen(name) && memcmp(m, name, len) == 0;
}

static void serve_call(uint64_t id, const unsigned char *method, size_t method_len,
                       const unsigned char *input, size_t input_len) {
    unsigned char *out;
    if (method_is(method, method_len, "echo")) {
        if ((out = begin_reply_ok(id, input_len)) != NULL) {
            if (input_len > 0) {
                memcpy(out, input, input_len);
            }
            end_frame();
        }
    } else if (method_is(method, method_len, "reverse")) {
        if ((out = begin_reply_ok(id, input_len)) != NULL) {
            for (size_t i = 0; i < input_len; i++) {
                out[i] = input[input_len - 1 - i];
            }
            end_frame();
        }
    } else if (method_is(method, method_len, "upper")) {
        if ((out = begin_reply_ok(id, input_len)) != NULL) {
            for (size_t i = 0; i < input_len; i++) {
                unsigned char b = input[i];
                out[i] = (b >= 'a' && b <= 'z') ? (unsigned char)(b - 'a' + 'A') : b;
            }
            end_frame();
        }
    } else if (method_is(method, method_len, "info")) {
        char json[128];
        int n = snprintf(json, sizeof json,
                         "{\"protocol_version\":%u,\"max_frame\":%" PRIu32 ",\"calls\":%" PRIu64 "}",
                         PROTOCOL_VERSION, max_frame, calls);
        if (n < 0 || (size_t)n >= sizeof json) {
            reply_err(id, "internal", "the info object did not fit its buffer");
        } else if ((out = begin_reply_ok(id, (size_t)n)) != NULL) {
            memcpy(out, json, (size_t)n);
            end_frame();
        }
    } else {
        static const char known[] = "; this plugin has echo, reverse, upper and info";
        static const char code[] = "unknown_method";
        /* Name the method when the message still fits; the method is
         * valid UTF-8 (get_str checked it), so quoting it keeps the
         * message valid UTF-8 too. */
        size_t fixed = REPLY_HEAD + str_size(code) + 8 + strlen("no method ``") + strlen(known);
        if (method_len <= max_frame - fixed) {
            begin_frame(PM_REPLY);
            put_le(id, 8);
            put_le(CR_ERR, 4);
            put_str(code);
            put_le(strlen("no method ``") + method_len + strlen(known), 8);
            put_raw("no method `", strlen("no method `"));
            put_raw(method, method_len);
            put_raw("`", 1);
            put_raw(known, strlen(known));
            end_frame();
        } else {
            reply_err(id, code, "no such method (its name is too long to repeat)");
        }
    }
}

/* ------------------------------------------------------------------ */

static void handshake(void) {
    struct cursor c;
    send_hello();
    if (!next_frame(&c)) {
        /* The host refused our Hello (or went away) and closed the channel. */
        exit(0);
    }
    uint64_t variant = get_le(&c, 4);
    if (c.bad || variant != HM_INIT) {
        protocol_error("expected Init (variant 0), got variant %" PRIu64, variant);
    }
    uint64_t version = get_le(&c, 2);
    uint64_t chosen_max = get_le(&c, 4);
    size_t config_len;
    (void)get_bytes(&c, &config_len); /* settings: this plugin has none */
    for (int i = 0; i < 4; i++) {
        (void)get_le(&c, 8); /* limits: the sandbox enforces them for us */
    }
    expect_end(&c, "Init");
    if (version != PROTOCOL_VERSION) {
        protocol_error("Init chose protocol version %" PRIu64 ", which we did not offer", version);
    }
    if (chosen_max > OUR_MAX_FRAME) {
        protocol_error("Init.max_frame %" PRIu64 " is more than our Hello.max_frame %u", chosen_max,
                       OUR_MAX_FRAME);
    }
    if (chosen_max < MIN_MAX_FRAME) {
        protocol_error("Init.max_frame %" PRIu64 " is below the %u bytes this plugin needs",
                       chosen_max, MIN_MAX_FRAME);
    }
    max_frame = (uint32_t)chosen_max;

    begin_frame(PM_READY);
    end_frame();
    send_log_started();
}

int main(void) {
    /* A write to a closed channel must come back as EPIPE, not kill us. */
    struct sigaction ignore = {.sa_handler = SIG_IGN};
    sigemptyset(&ignore.sa_mask);
    if (sigaction(SIGPIPE, &ignore, NULL) != 0) {
        perror(PLUGIN_NAME ": ignoring SIGPIPE");
        return EXIT_FAILURE;
    }

    handshake();

    struct cursor c;
    while (next_frame(&c)) {
        uint64_t variant = get_le(&c, 4);
        if (c.bad) {
            protocol_error("a frame too short to hold a message");
        }
        switch (variant) {
        case HM_CALL: {
            uint64_t id = get_le(&c, 8);
            size_t method_len, input_len;
            const unsigned char *method = get_str(&c, &method_len);
            const unsigned char *input = get_bytes(&c, &input_len);
            (void)get_le(&c, 8); /* timeout_ms: every method here is instant */
            expect_end(&c, "Call");
            calls++;
            serve_call(id, method, method_len, input, input_len);
            break;
        }
        case HM_CANCEL:
            /* Sequential: the call it names is already answered. */
            (void)get_le(&c, 8);
            expect_end(&c, "Cancel");
            break;
        case HM_PING: {
            uint64_t nonce = get_le(&c, 8);
            expect_end(&c, "Ping");
            begin_frame(PM_PONG);
            put_le(nonce, 8);
            end_frame();
            break;
        }
        case HM_SHUTDOWN:
            /* Every call received has been answered; send those answers. */
            (void)get_le(&c, 4);
            expect_end(&c, "Shutdown");
            flush();
            return 0;
        case HM_PONG:
            /* We never ping, so there is nothing to match it against. */
            (void)get_le(&c, 8);
            expect_end(&c, "Pong");
            break;
        case HM_INIT:
            protocol_error("a second Init");
        default:
            protocol_error("unknown HostMessage variant %" PRIu64, variant);
        }
    }
    /* End of stream between frames: the host is done with us (next_frame
     * wrote everything pending before it waited). */
    return 0;
}
