// A subscriber for the cross-language push tests, driven a line at a time on stdin, so that the
// test decides when it subscribes, reads and cancels and what the hub is given in between.
//
//   follower HOST PORT ROLE TOKEN, then commands:
//   subscribe predictions|indicators FROM SYMBOLS FILTER   (- for none; lists comma-separated)
//   events N      read N events, waiting as long as it takes
//   poll MS       read one event, waiting at most MS milliseconds
//   cancel ID
//   model ID      an ordinary call: SELECT one ML_MODEL
//   stored        compare the last row received of each key with the row SELECT returns
//   quit
// Each command's answer ends with a line "done".
#include <cstdlib>
#include <iostream>
#include <map>
#include <sstream>
#include <string>

#include "tradehub_client.hpp"

using namespace tradehub;

static std::vector<std::string> split(const std::string& list) {
    std::vector<std::string> items;
    if (list == "-") return items;
    std::stringstream parts(list);
    for (std::string item; std::getline(parts, item, ',');) items.push_back(item);
    return items;
}

static const char* kind_name(SQLCommand kind) {
    switch (kind) {
        case SQLCommand::INSERT: return "INSERT";
        case SQLCommand::UPDATE: return "UPDATE";
        case SQLCommand::DELETE: return "DELETE";
        default: return "OTHER";
    }
}

static std::string describe(const MlPredictionRow& p) {
    std::ostringstream out;
    out << p.symbol << " " << p.model_id << " " << p.horizon << " " << std::hexfloat << p.value << " " << p.confidence;
    return out.str();
}

static std::string describe(const TechnicalIndicatorRow& i) {
    std::ostringstream out;
    out << i.symbol << " " << i.name << " " << i.values.size() << " " << std::hexfloat << i.values.back();
    return out.str();
}

// The rows received of one table, by key: the latest of each, none once deleted.
template <SQLTable T>
using Received = std::map<std::string, typename TableTraits<T>::Row>;

struct Follower {
    Client& hub;
    Received<SQLTable::ML_PREDICTION> predictions;
    Received<SQLTable::TECHNICAL_INDICATOR> indicators;

    template <SQLTable T>
    void subscribe(typename TableTraits<T>::Subscribe request, const std::string& from, const std::string& symbols) {
        if (from != "-") request.from_position = std::stoull(from);
        request.symbols = split(symbols);
        Subscription subscription = hub.subscribe<T>(request);
        std::cout << "subscribed " << subscription.id << " " << subscription.position << "\n";
    }

    template <SQLTable T>
    void print(const Event& event, Received<T>& received) {
        std::string id = event.key<T>().id;
        std::cout << "event " << event.subscription << " " << kind_name(event.kind) << " " << event.position << " "
                  << id;
        if (event.kind == SQLCommand::DELETE) {
            received.erase(id);
        } else {
            typename TableTraits<T>::Row row = event.row<T>();
            std::cout << " " << describe(row);
            received[id] = row;
        }
        std::cout << "\n";
    }

    void print(const Event& event) {
        if (event.table == SQLTable::ML_PREDICTION) return print<SQLTable::ML_PREDICTION>(event, predictions);
        if (event.table == SQLTable::TECHNICAL_INDICATOR) return print<SQLTable::TECHNICAL_INDICATOR>(event, indicators);
        std::cout << "event of table " << static_cast<int>(event.table) << "\n";
    }

    template <SQLTable T>
    void compare_stored(const Received<T>& received) {
        if (received.empty()) return;
        typename TableTraits<T>::Select query;
        for (const auto& [id, row] : received) query.keys.push_back(key_of(row));
        query.limit = static_cast<std::uint32_t>(received.size());
        std::size_t same = 0;
        for (const auto& row : hub.select<T>(query).rows) {
            auto mine = received.find(row.id);
            if (mine != received.end() && mine->second == row) ++same;
        }
        std::cout << "stored " << received.size() << " same " << same << "\n";
    }

    void run(const std::string& line) {
        std::istringstream words(line);
        std::string command;
        words >> command;
        if (command == "subscribe") {
            std::string table, from, symbols, filter;
            words >> table >> from >> symbols >> filter;
            if (table == "predictions") {
                MlPredictionSubscribe request;
                request.model_ids = split(filter);
                subscribe<SQLTable::ML_PREDICTION>(request, from, symbols);
            } else {
                TechnicalIndicatorSubscribe request;
                request.names = split(filter);
                subscribe<SQLTable::TECHNICAL_INDICATOR>(request, from, symbols);
            }
        } else if (command == "events") {
            int count = 0;
            words >> count;
            for (int i = 0; i < count; ++i) print(hub.next_event());
        } else if (command == "poll") {
            long ms = 0;
            words >> ms;
            std::optional<Event> event = hub.next_event(std::chrono::milliseconds(ms));
            if (event) {
                print(*event);
            } else {
                std::cout << "none\n";
            }
        } else if (command == "cancel") {
            std::uint64_t id = 0;
            words >> id;
            std::uint64_t position = hub.cancel(id);
            std::cout << "cancelled " << position << "\n";
        } else if (command == "model") {
            MlModelSelect query;
            std::string id;
            words >> id;
            query.keys.push_back(MlModelKey{id});
            for (const MlModelRow& model : hub.select<SQLTable::ML_MODEL>(query).rows) {
                std::cout << "model " << model.id << " " << model.name << "\n";
            }
        } else if (command == "stored") {
            compare_stored<SQLTable::ML_PREDICTION>(predictions);
            compare_stored<SQLTable::TECHNICAL_INDICATOR>(indicators);
        } else {
            std::cout << "unknown command " << command << "\n";
        }
    }
};

int main(int argc, char** argv) {
    if (argc != 5) {
        std::cerr << "usage: follower HOST PORT ROLE TOKEN\n";
        return 2;
    }
    Role role = std::string(argv[3]) == "ml" ? Role::ML : Role::FRONTEND;
    Client hub(argv[1], static_cast<std::uint16_t>(std::atoi(argv[2])), role, argv[4], "follower");
    Follower follower{hub, {}, {}};
    for (std::string line; std::getline(std::cin, line) && line != "quit";) {
        try {
            follower.run(line);
        } catch (const SubscriptionError& e) {
            std::cout << "failed " << static_cast<int>(e.code) << " " << e.subscription << " " << e.what() << "\n";
        } catch (const HubError& e) {
            std::cout << "hub error " << static_cast<int>(e.code) << " " << e.what() << "\n";
        } catch (const std::logic_error& e) {
            std::cout << "not live: " << e.what() << "\n";
        }
        std::cout << "done" << std::endl;
    }
    std::cout << "shutdown " << hub.shutdown() << std::endl;
    return 0;
}
