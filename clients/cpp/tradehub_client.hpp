// A small blocking POSIX-socket client for tradehub, over the generated tradehub_protocol.hpp.
// C++17, standard library and POSIX only. One Client is one connection, used from one thread;
// calls are synchronous, and the events of its subscriptions wait in memory until next_event().
//
//   tradehub::Client hub("127.0.0.1", 7001, tradehub::Role::FRONTEND, token, "frontend-1");
//   auto answer = hub.insert<tradehub::SQLTable::ORDER>({order});  // answer.written: keys, what the hub set
//   auto stored = hub.insert<tradehub::SQLTable::ORDER>({order}, /*echo=*/true).rows;  // the rows as stored
//   auto predictions = hub.subscribe<tradehub::SQLTable::ML_PREDICTION>({});
//   while (auto event = hub.next_event(std::chrono::seconds(1))) {
//       auto prediction = event->row<tradehub::SQLTable::ML_PREDICTION>();
//   }
//   hub.cancel(predictions.id);
//   hub.shutdown();
#pragma once

#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <deque>
#include <map>
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

// The hub refused a subscription, or ended it later (POSITION_EXPIRED: the change log no longer
// keeps its position, so start again from a fresh state). No event of it follows.
class SubscriptionError : public HubError {
  public:
    SubscriptionError(std::uint64_t subscription, const HubError& error)
        : HubError(error), subscription(subscription) {}
    std::uint64_t subscription;
};

// A subscription the hub confirmed: its id (its SUBSCRIBE's request_id) and the change-log
// position it is current to, from which another connection resumes if no event follows.
struct Subscription {
    std::uint64_t id;
    SQLTable table;
    std::uint64_t position;
};

// One committed change pushed to a subscription, its payload joined when it came in several
// frames. The table's types decode it: row<T>() for INSERT and UPDATE, key<T>() for any kind.
struct Event {
    std::uint64_t subscription;
    SQLTable table;
    SQLCommand kind;  // INSERT, UPDATE or DELETE
    std::uint64_t position;  // resume after it, with from_position
    Bytes payload;  // TableTraits<table>::Event, or DeletedEvent for DELETE

    template <SQLTable T>
    typename TableTraits<T>::Row row() const {
        expect(T);
        if (kind == SQLCommand::DELETE) throw std::logic_error("a DELETE event carries only the key");
        return row_of(from_payload<typename TableTraits<T>::Event>(payload));
    }

    template <SQLTable T>
    typename TableTraits<T>::Key key() const {
        expect(T);
        if (kind == SQLCommand::DELETE) return key_of(from_payload<typename TableTraits<T>::DeletedEvent>(payload));
        return key_of(row<T>());
    }

  private:
    void expect(SQLTable wanted) const {
        if (table != wanted) throw std::logic_error("the event is of another table");
    }
};

class Client {
  public:
    Client(const std::string& host, std::uint16_t port, Role role, const std::string& token,
           const std::string& client_name = "cpp-client") {
        connect_to(host, port);
        Hello hello{static_cast<std::uint8_t>(role), 1, 1, client_name, token};
        send_all(encode_frame(MessageType::HELLO, to_payload(hello)));
        Frame answer = *receive(std::nullopt);
        if (is(answer, MessageType::ERROR)) throw hub_error(answer.payload);
        if (!is(answer, MessageType::HELLO_ACK)) throw std::runtime_error("expected HELLO_ACK");
        session_ = from_payload<HelloAck>(answer.payload);
        reader_.set_max_frame(session_.max_frame);
    }

    Client(const Client&) = delete;
    Client& operator=(const Client&) = delete;
    ~Client() { close_socket(); }

    const HelloAck& session() const { return session_; }

    // One request; returns its RESPONSE payload (joined when chunked) or throws HubError. After
    // the hub's own SHUTDOWN it throws HubError SHUTTING_DOWN without sending.
    Bytes call(SQLCommand command, SQLTable table, const Bytes& payload) {
        std::uint64_t request_id = next_request_id();
        send_request(command, table, payload, request_id);
        return answer(request_id);
    }

    template <SQLTable T>
    typename TableTraits<T>::Response insert(const std::vector<typename TableTraits<T>::Row>& rows,
                                            bool echo = false) {
        return rows_command<T>(SQLCommand::INSERT, rows, echo);
    }
    template <SQLTable T>
    typename TableTraits<T>::Response upsert(const std::vector<typename TableTraits<T>::Row>& rows,
                                            bool echo = false) {
        return rows_command<T>(SQLCommand::UPSERT, rows, echo);
    }
    template <SQLTable T>
    typename TableTraits<T>::Response update(const std::vector<typename TableTraits<T>::Row>& rows,
                                            bool echo = false) {
        return rows_command<T>(SQLCommand::UPDATE, rows, echo);
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

    // Follow a table's committed changes: its symbols and filters, and from_position (the last
    // position processed) to have what came after it first. Throws SubscriptionError if refused.
    template <SQLTable T>
    Subscription subscribe(const typename TableTraits<T>::Subscribe& request) {
        std::uint64_t id = next_request_id();
        send_all(encode_frame(MessageType::SUBSCRIBE, to_payload(request), id, NO_COMMAND, T));
        std::uint64_t position = subscription_answer(id);
        subscriptions_.emplace(id, T);
        return Subscription{id, T, position};
    }

    // The next event of any subscription, in the order they came, or none by the timeout.
    // Throws the SubscriptionError of a subscription the hub ended, once its events before are read.
    std::optional<Event> next_event(std::chrono::milliseconds timeout) {
        return next_event_by(Clock::now() + timeout);
    }
    Event next_event() { return *next_event_by(std::nullopt); }

    // End a live subscription: no event of it is returned after this; those the hub had sent and
    // next_event() had not returned are dropped. Returns the position the hub had it current to.
    // Throws std::logic_error when it is not live (cancelled, or ended by the hub: its
    // SubscriptionError then comes from next_event()).
    std::uint64_t cancel(std::uint64_t id) {
        auto live = subscriptions_.find(id);
        if (live == subscriptions_.end()) throw std::logic_error("no live subscription " + std::to_string(id));
        SQLTable table = live->second;
        subscriptions_.erase(live);
        partial_.erase(id);
        auto of_it = [&](const Frame& f) { return f.header.request_id == id; };
        pushed_.erase(std::remove_if(pushed_.begin(), pushed_.end(), of_it), pushed_.end());
        if (hub_shutdown_) throw shutting_down();
        send_all(encode_frame(MessageType::SUBSCRIBE, {}, id, NO_COMMAND, table, FLAG_CANCEL));
        return subscription_answer(id);
    }

    void heartbeat() { send_all(encode_frame(MessageType::HEARTBEAT, {})); }

    // Clean shutdown: SHUTDOWN, wait for SHUTDOWN_ACK, close. Returns the ack's `completed`, or 0
    // when the hub, stopping itself, closed first.
    std::uint32_t shutdown(const std::string& message = "done") {
        try {
            Shutdown request{static_cast<std::uint8_t>(ShutdownReason::CLIENT_DONE), 10000, message};
            send_all(encode_frame(MessageType::SHUTDOWN, to_payload(request)));
            for (;;) {
                Frame frame = *receive(std::nullopt);
                if (is(frame, MessageType::SHUTDOWN_ACK)) {
                    close_socket();
                    return from_payload<ShutdownAck>(frame.payload).completed;
                }
            }
        } catch (const std::exception&) {
            if (!hub_shutdown_) throw;
            close_socket();
            return 0;
        }
    }

  private:
    using Clock = std::chrono::steady_clock;
    static constexpr SQLCommand NO_COMMAND = static_cast<SQLCommand>(0);

    static bool is(const Frame& frame, MessageType type) {
        return frame.header.type == static_cast<std::uint8_t>(type);
    }

    template <SQLTable T>
    typename TableTraits<T>::Response rows_command(SQLCommand command,
                                                   const std::vector<typename TableTraits<T>::Row>& rows, bool echo) {
        typename TableTraits<T>::Rows request;
        request.echo = echo;
        request.rows = rows;
        return from_payload<typename TableTraits<T>::Response>(call(command, T, to_payload(request)));
    }

    std::uint64_t next_request_id() {
        if (hub_shutdown_) throw shutting_down();
        return next_id_++;
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

    // The answer to request_id: its RESPONSE payload joined, or its ERROR thrown. What comes
    // before it for others (events, the errors of subscriptions) is kept for next_event().
    Bytes answer(std::uint64_t request_id) {
        Bytes joined;
        for (;;) {
            Frame frame = *receive(std::nullopt);
            bool ours = frame.header.request_id == request_id &&
                        (is(frame, MessageType::RESPONSE) || is(frame, MessageType::ERROR));
            if (!ours) {
                keep(std::move(frame));
                continue;
            }
            if (is(frame, MessageType::ERROR)) throw hub_error(frame.payload);
            joined.insert(joined.end(), frame.payload.begin(), frame.payload.end());
            if (!(frame.header.flags & FLAG_MORE)) return joined;
        }
    }

    // The position a SUBSCRIBE or its cancel answers with, or its ERROR as a SubscriptionError.
    std::uint64_t subscription_answer(std::uint64_t id) {
        try {
            return from_payload<SubscribeAnswer>(answer(id)).position;
        } catch (const HubError& error) {
            throw SubscriptionError(id, error);
        }
    }

    // A frame that is not the answer being waited for: an EVENT (joined with its other frames),
    // a subscription's ERROR, or an ERROR about the whole connection (request_id 0), thrown.
    void keep(Frame frame) {
        std::uint64_t id = frame.header.request_id;
        bool live = subscriptions_.count(id) > 0;
        if (is(frame, MessageType::EVENT)) {
            if (!live) return;  // of a cancelled subscription
            auto joining = partial_.find(id);
            if (joining == partial_.end()) {
                joining = partial_.emplace(id, Frame{frame.header, {}}).first;
            }
            Bytes& joined = joining->second.payload;
            joined.insert(joined.end(), frame.payload.begin(), frame.payload.end());
            if (frame.header.flags & FLAG_MORE) return;
            pushed_.push_back(std::move(joining->second));
            partial_.erase(joining);
        } else if (is(frame, MessageType::ERROR) && live) {
            subscriptions_.erase(id);
            partial_.erase(id);
            pushed_.push_back(std::move(frame));
        } else if (is(frame, MessageType::ERROR) && id == 0) {
            throw hub_error(frame.payload);
        } else if (!is(frame, MessageType::ERROR)) {
            // An ERROR for another id answers a cancel that crossed its subscription's own end.
            throw std::runtime_error("unexpected message type " + std::to_string(frame.header.type) +
                                     " for request_id " + std::to_string(id));
        }
    }


    std::optional<Event> next_event_by(std::optional<Clock::time_point> deadline) {
        for (;;) {
            if (!pushed_.empty()) {
                Frame frame = std::move(pushed_.front());
                pushed_.pop_front();
                const Header& h = frame.header;
                if (is(frame, MessageType::ERROR)) throw SubscriptionError(h.request_id, hub_error(frame.payload));
                std::uint64_t position = event_position(frame.payload);
                return Event{h.request_id, static_cast<SQLTable>(h.table), static_cast<SQLCommand>(h.command),
                             position, std::move(frame.payload)};
            }
            // The hub ended every subscription with its SHUTDOWN: resume on another connection.
            if (hub_shutdown_) throw shutting_down();
            std::optional<Frame> frame = receive(deadline);
            if (!frame) return std::nullopt;
            keep(std::move(*frame));
        }
    }

    static HubError hub_error(const Bytes& payload) {
        Error error = from_payload<Error>(payload);
        return HubError(static_cast<ErrorCode>(error.code), error.row_index, error.message);
    }

    HubError shutting_down() const {
        return HubError(ErrorCode::SHUTTING_DOWN, -1, "the hub is shutting down: " + hub_shutdown_->message);
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

    void close_socket() {
        if (fd_ >= 0) ::close(fd_);
        fd_ = -1;
    }

    void send_all(const Bytes& bytes) {
        std::size_t sent = 0;
        while (sent < bytes.size()) {
            ssize_t n = ::send(fd_, bytes.data() + sent, bytes.size() - sent, MSG_NOSIGNAL);
            if (n < 0 && errno == EINTR) continue;
            if (n <= 0) throw std::system_error(errno, std::generic_category(), "send to the hub");
            sent += static_cast<std::size_t>(n);
        }
        last_sent_ = Clock::now();
    }

    // The next frame other than HEARTBEAT and SHUTDOWN, or none by the deadline. The hub's
    // SHUTDOWN is noted, not returned: answers to what was sent before it still come. While it
    // waits it sends HEARTBEAT, so that a client waiting for events keeps its session.
    std::optional<Frame> receive(std::optional<Clock::time_point> deadline) {
        const std::chrono::milliseconds heartbeat_every(session_.heartbeat_ms);  // 0 until HELLO_ACK
        for (;;) {
            while (std::optional<Frame> frame = reader_.next()) {
                if (is(*frame, MessageType::SHUTDOWN)) {
                    hub_shutdown_ = from_payload<Shutdown>(frame->payload);
                } else if (!is(*frame, MessageType::HEARTBEAT)) {
                    return frame;
                }
            }
            Clock::time_point now = Clock::now();
            if (heartbeat_every.count() > 0 && now - last_sent_ >= heartbeat_every) heartbeat();
            std::optional<Clock::time_point> wake = deadline;
            if (heartbeat_every.count() > 0) {
                wake = std::min(wake.value_or(Clock::time_point::max()), last_sent_ + heartbeat_every);
            }
            int wait_ms = -1;
            if (wake) {
                auto left = std::chrono::ceil<std::chrono::milliseconds>(*wake - now).count();
                wait_ms = static_cast<int>(std::clamp<decltype(left)>(left, 0, 60000));
            }
            pollfd readable{fd_, POLLIN, 0};
            int ready = ::poll(&readable, 1, wait_ms);
            if (ready < 0 && errno == EINTR) continue;
            if (ready < 0) throw std::system_error(errno, std::generic_category(), "wait for the hub");
            if (ready == 0) {
                if (deadline && Clock::now() >= *deadline) return std::nullopt;
                continue;
            }
            std::uint8_t chunk[65536];
            ssize_t n = ::recv(fd_, chunk, sizeof chunk, 0);
            if (n < 0 && errno == EINTR) continue;
            if (n < 0) throw std::system_error(errno, std::generic_category(), "receive from the hub");
            if (n == 0) {
                if (hub_shutdown_) throw shutting_down();
                throw std::runtime_error("the hub closed the connection");
            }
            reader_.feed(chunk, static_cast<std::size_t>(n));
        }
    }

    int fd_ = -1;
    FrameReader reader_;
    HelloAck session_{};
    std::uint64_t next_id_ = 1;
    Clock::time_point last_sent_ = Clock::now();
    std::optional<Shutdown> hub_shutdown_;
    // Live subscriptions by id; the events being joined; whole events and subscription ERRORs in order.
    std::map<std::uint64_t, SQLTable> subscriptions_;
    std::map<std::uint64_t, Frame> partial_;
    std::deque<Frame> pushed_;
};

}  // namespace tradehub
