/* Card numbers for _redact.c (the _detect module's rewriting half): redact._cards_in, the
 * rule's one readable form, in C. tests/pipeline/test_detect.py holds it to _cards_in.
 *
 * _cards_in replaces each match of ``\b[0-9](?:[ -]?[0-9]){12,}\b`` (Python re, ASCII) by
 * _redact_run of it. Such a match starts at a digit no word character precedes and runs
 * through digits joined by single separators; the greedy repeat backs off to the last run
 * end a word character does not follow, with 13 digits or more since the start. A start
 * that fails fails for every later start in its chain (fewer digits, the same ends), so the
 * search goes on after the chain. */
#include "_detect.h"


#define CARD_LABEL "[REDACTED:credit_card]"
#define CARD_LABEL_LEN (sizeof(CARD_LABEL) - 1)
#define MIN_CARD 13
#define MAX_CARD 19

static const int LUHN_DOUBLED[10] = {0, 2, 4, 6, 8, 1, 3, 5, 7, 9};

/* The end of the match starting at s[p] (0: none) and the end of its chain (*chain). */
static size_t run_end(const uint8_t *s, size_t n, size_t p, size_t *chain) {
    size_t count = 0, best = 0, i = p;
    for (;;) {
        size_t start = i;
        while (i < n && decimal[s[i]]) i++;
        count += i - start;
        int joined = i + 1 < n && (s[i] == ' ' || s[i] == '-') && decimal[s[i + 1]];
        if (count >= MIN_CARD && (joined || i == n || !word[s[i]])) best = i;
        if (!joined) break;
        i++;
    }
    *chain = i;
    return best;
}


/* luhn_valid of the digits of groups i..j, read from the right. */
static int luhn(const uint8_t *s, const Groups *g, size_t i, size_t j) {
    int sum = 0, k = 0;
    for (size_t x = j + 1; x-- > i;)
        for (size_t t = g->len[x]; t-- > 0; k++) {
            int d = s[g->at[x] + t] - '0';
            sum += (k & 1) ? LUHN_DOUBLED[d] : d;
        }
    return sum % 10 == 0;
}

/* Whether groups i..j, of `digits` digits, are a card (_redact_run's test). */
static int card_of(const uint8_t *s, const Groups *g, size_t i, size_t j, size_t digits) {
    if (digits < MIN_CARD || digits > MAX_CARD || s[g->at[i]] < '2' || s[g->at[i]] > '6')
        return 0;
    for (size_t x = i; j > i && x <= j; x++) /* _plausible: whole, or groups of 6 at most */
        if (g->len[x] > 6) return 0;
    return luhn(s, g, i, j);
}

/* _redact_run of the run s[0..n) (digits joined by single separators), written to out;
 * the bytes written. g has room for n groups. */
static size_t redact_run(const uint8_t *s, size_t n, uint8_t *out, Groups *g) {
    size_t ng = 0, total = 0;
    for (size_t i = 0; i < n; i++) {
        size_t a = i;
        while (i < n && decimal[s[i]]) i++;
        g->at[ng] = a;
        g->len[ng++] = i - a;
        total += i - a;
    }
    if (total < MIN_CARD) {
        memcpy(out, s, n);
        return n;
    }
    if (card_of(s, g, 0, ng - 1, total)) {
        memcpy(out, CARD_LABEL, CARD_LABEL_LEN);
        return CARD_LABEL_LEN;
    }
    g->covered[ng] = 0;
    for (size_t i = ng; i-- > 0;) { /* the cards covering the most digits of groups i.. */
        g->covered[i] = g->covered[i + 1];
        g->card_end[i] = -1;
        size_t digits = 0;
        for (size_t j = i; j < ng; j++) {
            digits += g->len[j];
            if (digits > MAX_CARD) break;
            if (card_of(s, g, i, j, digits) && digits + g->covered[j + 1] > g->covered[i]) {
                g->covered[i] = digits + g->covered[j + 1];
                g->card_end[i] = (Py_ssize_t)j;
            }
        }
    }
    size_t w = 0;
    for (size_t i = 0; i < ng; i++) {
        if (g->card_end[i] < 0) {
            memcpy(out + w, s + g->at[i], g->len[i]);
            w += g->len[i];
        } else {
            memcpy(out + w, CARD_LABEL, CARD_LABEL_LEN);
            w += CARD_LABEL_LEN;
            i = (size_t)g->card_end[i];
        }
        if (i + 1 < ng) out[w++] = s[g->at[i] + g->len[i]]; /* the separator after it */
    }
    return w;
}

/* _cards_in of s[0..n), appended to out (at most 2n bytes: a label is longer than the 13
 * digits or more it replaces by less than their number). */
int cards_in(const uint8_t *s, size_t n, Text *out, Groups *g) {
    if (reserve(out, 2 * n) < 0) return -1;
    size_t copied = 0;
    for (size_t p = next_start(s, n, n, 0); p < n; p = next_start(s, n, n, p)) {
        size_t chain, end = run_end(s, n, p, &chain);
        if (!end) {
            p = chain;
            continue;
        }
        put(out, s + copied, p - copied);
        out->len += redact_run(s + p, end - p, out->buf + out->len, g);
        copied = p = end;
    }
    put(out, s + copied, n - copied);
    return 0;
}

/* Room in g for the groups of a run of n bytes. */
int groups_for(Groups *g, size_t n) {
    if (n + 2 <= g->room) return 0;
    size_t room = 2 * (n + 2);
    size_t *at = PyMem_RawRealloc(g->at, room * sizeof(size_t));
    if (at) g->at = at;
    size_t *len = PyMem_RawRealloc(g->len, room * sizeof(size_t));
    if (len) g->len = len;
    size_t *covered = PyMem_RawRealloc(g->covered, room * sizeof(size_t));
    if (covered) g->covered = covered;
    Py_ssize_t *card_end = PyMem_RawRealloc(g->card_end, room * sizeof(Py_ssize_t));
    if (card_end) g->card_end = card_end;
    if (!at || !len || !covered || !card_end) return -1;
    g->room = room;
    return 0;
}

