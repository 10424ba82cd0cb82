#include "http_support.h"

#include <arpa/inet.h>
#include <event2/buffer.h>
#include <event2/keyvalq_struct.h>
#include <netdb.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <cerrno>
#include <cstring>

namespace stallwatch::cli::internal {

std::string QueryOf(evhttp_request* req) {
  const evhttp_uri* uri = evhttp_request_get_evhttp_uri(req);
  const char* q = uri != nullptr ? evhttp_uri_get_query(uri) : nullptr;
  return q != nullptr ? q : "";
}

void Reply(evhttp_request* req, int code, const char* reason, const std::string& body,
           const char* content_type) {
  evkeyvalq* headers = evhttp_request_get_output_headers(req);
  evhttp_add_header(headers, "Content-Type", content_type);
  evbuffer* buf = evbuffer_new();
  evbuffer_add(buf, body.data(), body.size());
  evhttp_send_reply(req, code, reason, buf);
  evbuffer_free(buf);
}

void ReplyBadRequest(evhttp_request* req, const std::string& message) {
  Reply(req, HTTP_BADREQUEST, "Bad Request", message + "\n");
}

int ParseHostPort(const std::string& hp, std::string* host) {
  const auto colon = hp.rfind(':');
  if (colon == std::string::npos) {
    return -1;
  }
  *host = hp.substr(0, colon);
  try {
    const int port = std::stoi(hp.substr(colon + 1));
    return port > 0 && port < 65536 ? port : -1;
  } catch (...) {
    return -1;
  }
}

int BindHttp(evhttp* http, const std::string& bind, int port, std::string* error) {
  // Resolved here first: evhttp's own failure to resolve leaves errno at 0 ("Success").
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE;
  addrinfo* res = nullptr;
  if (const int rc = getaddrinfo(bind.c_str(), nullptr, &hints, &res); rc != 0 || res == nullptr) {
    *error = "cannot resolve --bind '" + bind + "': " + gai_strerror(rc) +
             "; expected an address or host name of this machine, e.g. 127.0.0.1, 0.0.0.0 or ::1";
    return -1;
  }
  freeaddrinfo(res);
  errno = 0;
  evhttp_bound_socket* bs = evhttp_bind_socket_with_handle(http, bind.c_str(), port);
  if (bs == nullptr) {
    const std::string why = errno != 0 ? std::strerror(errno) : "the address cannot be bound";
    *error = "cannot listen on " + bind + ":" + std::to_string(port) + ": " + why +
             " (try another --port, or --port 0 for any free port)";
    return -1;
  }
  sockaddr_storage ss{};
  socklen_t len = sizeof ss;
  if (getsockname(evhttp_bound_socket_get_fd(bs), reinterpret_cast<sockaddr*>(&ss), &len) != 0) {
    *error = std::string("getsockname: ") + std::strerror(errno);
    return -1;
  }
  if (ss.ss_family == AF_INET) {
    return ntohs(reinterpret_cast<sockaddr_in*>(&ss)->sin_port);
  }
  return ntohs(reinterpret_cast<sockaddr_in6*>(&ss)->sin6_port);
}

}  // namespace stallwatch::cli::internal
