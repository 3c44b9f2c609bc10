/* Progress bars of the marble command: one line on stderr, redrawn in place, only when stderr
 * is a terminal. */
#include "cli/cli_util.h"

#include <inttypes.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

void cli_progress_start(cli_progress *p, const char *label, const char *unit, uint64_t total)
{
    memset(p, 0, sizeof *p);
    p->on = isatty(2);
    p->label = label;
    p->unit = unit;
    p->total = total;
    p->t0 = marble_now_ns();
    p->width = 80;
    struct winsize ws;
    if (p->on && ioctl(2, TIOCGWINSZ, &ws) == 0 && ws.ws_col >= 40) p->width = ws.ws_col;
    if (p->width > 160) p->width = 160;
}

/* 1234567 -> "1.23M"; bytes -> "1.2 MiB". */
static void human(char *buf, size_t cap, double v, int bytes)
{
    if (bytes) {
        const char *u[] = {"B", "KiB", "MiB", "GiB", "TiB"};
        int k = 0;
        while (v >= 1024 && k < 4) {
            v /= 1024;
            k++;
        }
        snprintf(buf, cap, k ? "%.1f %s" : "%.0f %s", v, u[k]);
    } else {
        const char *u[] = {"", "k", "M", "G", "T"};
        int k = 0;
        while (v >= 1000 && k < 4) {
            v /= 1000;
            k++;
        }
        snprintf(buf, cap, k ? "%.2f%s" : "%.0f%s", v, u[k]);
    }
}

void cli_progress_update(cli_progress *p, uint64_t done, double frac)
{
    if (!p->on) return;
    uint64_t now = marble_now_ns();
    if (p->last_draw && now - p->last_draw < 100000000ull) return;
    p->last_draw = now;
    double secs = (double)(now - p->t0) / 1e9;
    if (frac < 0 && p->total) frac = (double)done / (double)p->total;
    if (frac > 1) frac = 1;
    int bytes = !strcmp(p->unit, "bytes");
    char d[32], r[32], eta[32] = "";
    human(d, sizeof d, (double)done, bytes);
    human(r, sizeof r, secs > 0 ? (double)done / secs : 0, bytes);
    if (frac > 0 && secs > 0.5) {
        double left = secs * (1 - frac) / frac;
        snprintf(eta, sizeof eta, " ETA %d:%02d", (int)left / 60, (int)left % 60);
    }
    char tail[128];
    snprintf(tail, sizeof tail, " %s %s  %s %s/s%s", d, bytes ? "" : p->unit, r,
             bytes ? "" : p->unit, eta);
    char line[256];
    int n;
    if (frac >= 0) {
        int bar = p->width - (int)strlen(p->label) - (int)strlen(tail) - 12;
        if (bar > 40) bar = 40;
        if (bar < 5) bar = 5;
        int fill = (int)(frac * bar);
        char b[64];
        for (int i = 0; i < bar; i++)
            b[i] = i < fill ? '#' : '.';
        b[bar] = 0;
        n = snprintf(line, sizeof line, "%s [%s] %5.1f%%%s", p->label, b, 100 * frac, tail);
    } else {
        n = snprintf(line, sizeof line, "%s %.1fs%s", p->label, secs, tail);
    }
    if (n >= p->width) line[p->width - 1] = 0;
    fprintf(stderr, "\r%s\033[K", line);
    fflush(stderr);
}

void cli_progress_end(cli_progress *p)
{
    if (!p->on || !p->last_draw) return;
    fprintf(stderr, "\r\033[K");
    fflush(stderr);
}
