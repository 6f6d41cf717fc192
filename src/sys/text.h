// A fixed buffer that text is appended to, dropping what does not fit. No allocation and no
// stdio, so it is safe in a signal handler (the wait dump) and under the graph lock.
#pragma once

#include <stddef.h>
#include <stdint.h>
#include <string.h>

namespace surelock::sys {

struct Text {
    char *buf;
    size_t cap, len = 0;
    Text(char *b, size_t c) : buf(b), cap(c) { buf[0] = '\0'; }

    void add(const char *s, size_t n)
    {
        if (cap == 0) return;
        size_t room = cap - 1 - len;
        if (n > room) n = room;
        memcpy(buf + len, s, n);
        len += n;
        buf[len] = '\0';
    }
    void add(const char *s) { add(s, strlen(s)); }
    void number(uint64_t v)
    {
        char digits[24];
        size_t n = 0;
        do digits[sizeof digits - 1 - n++] = (char)('0' + v % 10);
        while ((v /= 10) != 0);
        add(digits + sizeof digits - n, n);
    }
    bool full() const { return len + 1 >= cap; }
};

} // namespace surelock::sys
