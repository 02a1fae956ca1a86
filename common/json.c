/*
 * Growable text buffers and a JSON writer.  Escaping is strict so that any
 * byte string, including invalid UTF-8 and embedded NULs, becomes valid
 * JSON that Python's json module and serde_json accept.
 */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "json.h"
#include "mem.h"

void zm_buf_init(struct zm_buf *b)
{
	b->data = NULL;
	b->len = 0;
	b->cap = 0;
	b->failed = false;
}

void zm_buf_release(struct zm_buf *b)
{
	free(b->data);
	zm_buf_init(b);
}

/* Makes room for n more bytes plus a NUL; false (and failed set) when that
 * cannot be done. */
static bool buf_reserve(struct zm_buf *b, size_t n)
{
	size_t need, cap;
	char *nd;

	if (b->failed)
		return false;
	if (!zm_size_add(b->len, n, &need) || !zm_size_add(need, 1, &need)) {
		b->failed = true;
		return false;
	}
	if (need <= b->cap)
		return true;
	cap = b->cap ? b->cap : 256;
	while (cap < need) {
		if (cap > SIZE_MAX / 2) {
			cap = need;
			break;
		}
		cap *= 2;
	}
	nd = zm_realloc(b->data, cap);
	if (!nd) {
		b->failed = true;
		return false;
	}
	b->data = nd;
	b->cap = cap;
	return true;
}

void zm_buf_append(struct zm_buf *b, const void *data, size_t n)
{
	if (!buf_reserve(b, n))
		return;
	if (n)
		memcpy(b->data + b->len, data, n);
	b->len += n;
	b->data[b->len] = '\0';
}

void zm_buf_puts(struct zm_buf *b, const char *s)
{
	zm_buf_append(b, s, strlen(s));
}

void zm_buf_printf(struct zm_buf *b, const char *fmt, ...)
{
	va_list ap;
	int n;

	if (b->failed)
		return;
	/* Try the space we have first: most calls fit, so one pass suffices. */
	if (!buf_reserve(b, 64))
		return;
	va_start(ap, fmt);
	n = vsnprintf(b->data + b->len, b->cap - b->len, fmt, ap);
	va_end(ap);
	if (n < 0) {
		b->failed = true;
		b->data[b->len] = '\0';
		return;
	}
	if ((size_t)n >= b->cap - b->len) {
		if (!buf_reserve(b, (size_t)n)) {
			b->data[b->len] = '\0';
			return;
		}
		va_start(ap, fmt);
		vsnprintf(b->data + b->len, b->cap - b->len, fmt, ap);
		va_end(ap);
	}
	b->len += (size_t)n;
}

/* Length of the valid UTF-8 sequence at s (at most n bytes), or 0 when the
 * bytes there are not valid UTF-8 (overlongs, surrogates and code points
 * past U+10FFFF are invalid too). */
static size_t utf8_valid_len(const unsigned char *s, size_t n)
{
	unsigned char c = s[0];
	size_t len, i;
	uint32_t cp;

	if (c < 0x80)
		return 1;
	if (c >= 0xc2 && c <= 0xdf) {
		len = 2;
		cp = c & 0x1f;
	} else if (c >= 0xe0 && c <= 0xef) {
		len = 3;
		cp = c & 0x0f;
	} else if (c >= 0xf0 && c <= 0xf4) {
		len = 4;
		cp = c & 0x07;
	} else {
		return 0;
	}
	if (n < len)
		return 0;
	for (i = 1; i < len; i++) {
		if ((s[i] & 0xc0) != 0x80)
			return 0;
		cp = (cp << 6) | (s[i] & 0x3f);
	}
	if ((len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) ||
	    cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
		return 0;
	return len;
}

/* The code point of the valid UTF-8 sequence p of len bytes (1 to 4). */
static uint32_t utf8_code_point(const unsigned char *p, size_t len)
{
	static const unsigned char lead_mask[5] = { 0, 0x7f, 0x1f, 0x0f, 0x07 };
	uint32_t cp = p[0] & lead_mask[len];
	size_t k;

	for (k = 1; k < len; k++)
		cp = (cp << 6) | (p[k] & 0x3f);
	return cp;
}

/* True for code points a YAML reader refuses (C1 controls, U+FFFE,
 * U+FFFF) or reads as a line break (U+0085, U+2028, U+2029) or a byte
 * order mark (U+FEFF) inside a double-quoted scalar. */
static bool yaml_unsafe(const unsigned char *p, size_t len)
{
	uint32_t cp = utf8_code_point(p, len);

	return (cp >= 0x80 && cp <= 0x9f) || cp == 0x2028 || cp == 0x2029 ||
	       cp == 0xfeff || cp == 0xfffe || cp == 0xffff;
}

void zm_json_string(struct zm_buf *b, const char *s, size_t n)
{
	const unsigned char *p = (const unsigned char *)s;
	size_t i = 0, run = 0;

	zm_buf_append(b, "\"", 1);
	while (i < n) {
		unsigned char c = p[i];
		const char *esc = NULL;
		char hex[8];
		size_t len = 0;

		/* Plain printable ASCII and valid UTF-8 are copied in runs. */
		if (c >= 0x20 && c != '"' && c != '\\' && c < 0x7f) {
			run++;
			i++;
			continue;
		}
		if (c >= 0x80 && (len = utf8_valid_len(p + i, n - i)) > 0 &&
		    !yaml_unsafe(p + i, len)) {
			run += len;
			i += len;
			continue;
		}
		if (run)
			zm_buf_append(b, p + i - run, run);
		run = 0;
		if (len > 0) {
			/* C1 controls, line separators, BOM, non-characters:
			 * valid JSON raw, but YAML refuses or folds them, and
			 * this text is also our YAML. */
			snprintf(hex, sizeof(hex), "\\u%04x",
			         (unsigned)utf8_code_point(p + i, len));
			zm_buf_puts(b, hex);
			i += len;
			continue;
		}
		switch (c) {
		case '"': esc = "\\\""; break;
		case '\\': esc = "\\\\"; break;
		case '\n': esc = "\\n"; break;
		case '\r': esc = "\\r"; break;
		case '\t': esc = "\\t"; break;
		case '\b': esc = "\\b"; break;
		case '\f': esc = "\\f"; break;
		default:
			if (c < 0x20 || c == 0x7f) {	/* YAML refuses DEL */
				snprintf(hex, sizeof(hex), "\\u%04x", c);
				esc = hex;
			} else {
				esc = "\xef\xbf\xbd";	/* U+FFFD for a bad byte */
			}
		}
		zm_buf_puts(b, esc);
		i++;
	}
	if (run)
		zm_buf_append(b, p + i - run, run);
	zm_buf_append(b, "\"", 1);
}

/* Formats v with precision significant digits; a locale with a decimal comma would break JSON, so
 * any comma becomes a point (only the decimal separator can be one). */
static void json_number(struct zm_buf *b, int precision, double v)
{
	char tmp[64];
	char *c;

	if (!isfinite(v)) {
		zm_buf_puts(b, "null");
		return;
	}
	snprintf(tmp, sizeof(tmp), "%.*g", precision, v);
	for (c = tmp; *c; c++)
		if (*c == ',')
			*c = '.';
	zm_buf_puts(b, tmp);
}

void zm_json_float(struct zm_buf *b, double v)
{
	json_number(b, 9, v);
}

void zm_json_double(struct zm_buf *b, double v)
{
	json_number(b, 17, v);
}

static const char *skip_digits(const char *p)
{
	while (*p >= '0' && *p <= '9')
		p++;
	return p;
}

bool zm_json_is_number(const char *s)
{
	const char *p = s, *q;

	if (*p == '-')
		p++;
	if (*p == '0')
		p++;
	else if (*p >= '1' && *p <= '9')
		p = skip_digits(p);
	else
		return false;
	if (*p == '.') {
		q = skip_digits(p + 1);
		if (q == p + 1)
			return false;
		p = q;
	}
	if (*p == 'e' || *p == 'E') {
		p++;
		if (*p == '+' || *p == '-')
			p++;
		q = skip_digits(p);
		if (q == p)
			return false;
		p = q;
	}
	return *p == '\0';
}
