// A small blocking POSIX-socket client for tradehub, over the generated tradehub_protocol.hpp.
// C++17, standard library and POSIX only. One Client is one connection; calls are synchronous.
//
//   tradehub::Client hub("127.0.0.1", 7001, tradehub::Role::FRONTEND, token, "frontend-1");
//   auto stored = hub.insert<tradehub::SQLTable::ORDER>({order});
//   hub.shutdown();
#pragma once

#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <string>
#include <system_error>
#include <vector>

#include "tradehub_protocol.hpp"

namespace tradehub {

// An ERROR from the hub: its code, message and the offending row of a multi-row request (or -1).
class HubError : public std::runtime_error {
  public:
    HubError(ErrorCode code, std::int32_t row_index, const std::string& message)
        : std::runtime_error(message), code(code), row_index(row_index) {}
    ErrorCode code;
    std::int32_t row_index;
};

class Client {
  public:
    Client(const std::string& host, std::uint16_t port, Role role, const std::string& token,
           const std::string& client_name = "cpp-client") {
        connect_to(host, port);
        Hello hello{static_cast<std::uint8_t>(role), 1, 1, client_name, token};
        send_all(encode_frame(MessageType::HELLO, to_payload(hello)));
        Frame answer = read_frame();
        if (answer.header.type == static_cast<std::uint8_t>(MessageType::ERROR)) throw_error(answer.payload);
        if (answer.header.type != static_cast<std::uint8_t>(MessageType::HELLO_ACK))
            throw std::runtime_error("expected HELLO_ACK");
        session_ = from_payload<HelloAck>(answer.payload);
        reader_.set_max_frame(session_.max_frame);
    }

    Client(const Client&) = delete;
    Client& operator=(const Client&) = delete;
    ~Client() {
        if (fd_ >= 0) ::close(fd_);
    }

    const HelloAck& session() const { return session_; }

    // One request; returns its RESPONSE payload (joined when chunked) or throws HubError.
    Bytes call(SQLCommand command, SQLTable table, const Bytes& payload) {
        std::uint64_t request_id = next_id_++;
        send_request(command, table, payload, request_id);
        Bytes joined;
        for (;;) {
            Frame frame = read_frame();
            if (frame.header.request_id != request_id) throw std::runtime_error("answer to another request");
            if (frame.header.type == static_cast<std::uint8_t>(MessageType::ERROR)) throw_error(frame.payload);
            joined.insert(joined.end(), frame.payload.begin(), frame.payload.end());
            if (!(frame.header.flags & FLAG_MORE)) return joined;
        }
    }

    template <SQLTable T>
    typename TableTraits<T>::Response insert(const std::vector<typename TableTraits<T>::Row>& rows) {
        return rows_command<T>(SQLCommand::INSERT, rows);
    }
    template <SQLTable T>
    typename TableTraits<T>::Response upsert(const std::vector<typename TableTraits<T>::Row>& rows) {
        return rows_command<T>(SQLCommand::UPSERT, rows);
    }
    template <SQLTable T>
    typename TableTraits<T>::Response update(const std::vector<typename TableTraits<T>::Row>& rows) {
        return rows_command<T>(SQLCommand::UPDATE, rows);
    }
    template <SQLTable T>
    typename TableTraits<T>::Response remove(const std::vector<typename TableTraits<T>::Key>& keys) {
        typename TableTraits<T>::Keys request;
        request.keys = keys;
        return from_payload<typename TableTraits<T>::Response>(call(SQLCommand::DELETE, T, to_payload(request)));
    }
    template <SQLTable T>
    typename TableTraits<T>::Response select(const typename TableTraits<T>::Select& query) {
        return from_payload<typename TableTraits<T>::Response>(call(SQLCommand::SELECT, T, to_payload(query)));
    }

    void heartbeat() { send_all(encode_frame(MessageType::HEARTBEAT, {})); }

    // Clean shutdown: SHUTDOWN, wait for SHUTDOWN_ACK, close. Returns the ack's `completed`.
    std::uint32_t shutdown(const std::string& message = "done") {
        Shutdown request{static_cast<std::uint8_t>(ShutdownReason::CLIENT_DONE), 10000, message};
        send_all(encode_frame(MessageType::SHUTDOWN, to_payload(request)));
        for (;;) {
            Frame frame = read_frame();
            if (frame.header.type == static_cast<std::uint8_t>(MessageType::SHUTDOWN_ACK)) {
                ::close(fd_);
                fd_ = -1;
                return from_payload<ShutdownAck>(frame.payload).completed;
            }
        }
    }

  private:
    template <SQLTable T>
    typename TableTraits<T>::Response rows_command(SQLCommand command,
                                                   const std::vector<typename TableTraits<T>::Row>& rows) {
        typename TableTraits<T>::Rows request;
        request.rows = rows;
        return from_payload<typename TableTraits<T>::Response>(call(command, T, to_payload(request)));
    }

    // Large payloads go as several REQUEST frames, MORE set on all but the last.
    void send_request(SQLCommand command, SQLTable table, const Bytes& payload, std::uint64_t request_id) {
        std::size_t room = session_.max_frame - HEADER_SIZE;
        std::size_t start = 0;
        do {
            std::size_t size = std::min(room, payload.size() - start);
            bool more = start + size < payload.size();
            Bytes part(payload.begin() + start, payload.begin() + start + size);
            send_all(encode_frame(MessageType::REQUEST, part, request_id, command, table, more ? FLAG_MORE : 0));
            start += size;
        } while (start < payload.size());
    }

    [[noreturn]] static void throw_error(const Bytes& payload) {
        Error error = from_payload<Error>(payload);
        throw HubError(static_cast<ErrorCode>(error.code), error.row_index, error.message);
    }

    void connect_to(const std::string& host, std::uint16_t port) {
        addrinfo hints{};
        hints.ai_socktype = SOCK_STREAM;
        addrinfo* found = nullptr;
        int status = ::getaddrinfo(host.c_str(), std::to_string(port).c_str(), &hints, &found);
        if (status != 0) throw std::runtime_error("cannot resolve " + host + ": " + ::gai_strerror(status));
        for (addrinfo* a = found; a != nullptr; a = a->ai_next) {
            fd_ = ::socket(a->ai_family, a->ai_socktype, a->ai_protocol);
            if (fd_ < 0) continue;
            if (::connect(fd_, a->ai_addr, a->ai_addrlen) == 0) break;
            ::close(fd_);
            fd_ = -1;
        }
        ::freeaddrinfo(found);
        if (fd_ < 0) throw std::system_error(errno, std::generic_category(), "cannot connect to " + host);
        int one = 1;
        ::setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    }

    void send_all(const Bytes& bytes) {
        std::size_t sent = 0;
        while (sent < bytes.size()) {
            ssize_t n = ::send(fd_, bytes.data() + sent, bytes.size() - sent, MSG_NOSIGNAL);
            if (n < 0 && errno == EINTR) continue;
            if (n <= 0) throw std::system_error(errno, std::generic_category(), "send to the hub");
            sent += static_cast<std::size_t>(n);
        }
    }

    // The next frame other than HEARTBEAT.
    Frame read_frame() {
        for (;;) {
            while (std::optional<Frame> frame = reader_.next()) {
                if (frame->header.type != static_cast<std::uint8_t>(MessageType::HEARTBEAT)) return *frame;
            }
            std::uint8_t chunk[65536];
            ssize_t n = ::recv(fd_, chunk, sizeof chunk, 0);
            if (n < 0 && errno == EINTR) continue;
            if (n < 0) throw std::system_error(errno, std::generic_category(), "receive from the hub");
            if (n == 0) throw std::runtime_error("the hub closed the connection");
            reader_.feed(chunk, static_cast<std::size_t>(n));
        }
    }

    int fd_ = -1;
    FrameReader reader_;
    HelloAck session_{};
    std::uint64_t next_id_ = 1;
};

}  // namespace tradehub
