/* The baseline for `stallwatch serve`'s hello route: the smallest evhttp server that answers
 * "hello world\n" on every path. Usage: plain_evhttp_hello [port] (default 8890). */
#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>

static void on_request(struct evhttp_request* req, void* arg) {
  (void)arg;
  struct evbuffer* buf = evbuffer_new();
  evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type",
                    "text/plain; charset=utf-8");
  evbuffer_add(buf, "hello world\n", 12);
  evhttp_send_reply(req, 200, "OK", buf);
  evbuffer_free(buf);
}

static void on_signal(evutil_socket_t sig, short what, void* arg) {
  (void)sig;
  (void)what;
  event_base_loopbreak((struct event_base*)arg);
}

int main(int argc, char** argv) {
  const int port = argc > 1 ? atoi(argv[1]) : 8890;
  signal(SIGPIPE, SIG_IGN);
  struct event_base* base = event_base_new();
  struct evhttp* http = evhttp_new(base);
  if (evhttp_bind_socket(http, "127.0.0.1", (unsigned short)port) != 0) {
    fprintf(stderr, "plain_evhttp_hello: cannot listen on 127.0.0.1:%d\n", port);
    return 1;
  }
  evhttp_set_gencb(http, on_request, NULL);
  struct event* sigint = evsignal_new(base, SIGINT, on_signal, base);
  struct event* sigterm = evsignal_new(base, SIGTERM, on_signal, base);
  evsignal_add(sigint, NULL);
  evsignal_add(sigterm, NULL);
  fprintf(stderr, "plain_evhttp_hello: listening on http://127.0.0.1:%d\n", port);
  event_base_dispatch(base);
  event_free(sigint);
  event_free(sigterm);
  evhttp_free(http);
  event_base_free(base);
  return 0;
}
