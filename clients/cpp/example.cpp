// The C++ frontend's side in one page: handshake, follow the predictions for its symbol, insert an
// order and read it back meanwhile, wait for the next prediction, shut down.
//
//   g++ -std=c++17 -Wall -Wextra -Werror -I clients/cpp clients/cpp/example.cpp -o example
//   TRADEHUB_FRONTEND_TOKEN=... ./example [host] [port] [client_order_id]
#include <chrono>
#include <cstdlib>
#include <iostream>

#include "tradehub_client.hpp"

using namespace tradehub;

static Timestamp now() {
    auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::system_clock::now().time_since_epoch());
    return Timestamp{ns.count()};
}

int main(int argc, char** argv) {
    std::string host = argc > 1 ? argv[1] : "127.0.0.1";
    std::uint16_t port = static_cast<std::uint16_t>(argc > 2 ? std::atoi(argv[2]) : 7001);
    std::string client_order_id = argc > 3 ? argv[3] : "example-" + std::to_string(now().ns);
    const char* token = std::getenv("TRADEHUB_FRONTEND_TOKEN");
    if (token == nullptr) {
        std::cerr << "set TRADEHUB_FRONTEND_TOKEN\n";
        return 2;
    }
    try {
        Client hub(host, port, Role::FRONTEND, token, "cpp-example");
        std::cout << "session " << hub.session().session_id << " (protocol v" << int(hub.session().version) << ")\n";

        // Predictions committed from now on; events that come during the calls below wait for next_event().
        MlPredictionSubscribe wanted;
        wanted.symbols = {"AAPL"};
        Subscription predictions = hub.subscribe<SQLTable::ML_PREDICTION>(wanted);
        std::cout << "following AAPL predictions from position " << predictions.position << std::endl;

        OrderRow order;
        order.client_order_id = client_order_id;
        order.symbol = "AAPL";
        order.asset_class = "us_equity";
        order.side = "buy";
        order.type = "limit";
        order.time_in_force = "day";
        order.order_class = "simple";
        order.qty = Decimal::parse("10");
        order.limit_price = Decimal::parse("189.12");
        order.status = "new";
        order.filled_qty = Decimal::parse("0");
        order.created_at = order.updated_at = now();
        hub.insert<SQLTable::ORDER>({order});

        OrderSelect by_key;
        by_key.keys.push_back(OrderKey{client_order_id});
        OrderResponse stored = hub.select<SQLTable::ORDER>(by_key);
        if (stored.rows.size() != 1 || stored.rows[0] != order) {
            std::cerr << "the order read back differs from the order sent\n";
            return 1;
        }
        std::cout << "order " << client_order_id << ": " << stored.rows[0].side << " " << stored.rows[0].qty->str()
                  << " " << stored.rows[0].symbol << " @ " << stored.rows[0].limit_price->str() << ", "
                  << stored.rows[0].status << "\n";

        if (std::optional<Event> event = hub.next_event(std::chrono::seconds(10))) {
            MlPredictionRow p = event->row<SQLTable::ML_PREDICTION>();
            std::cout << "prediction " << p.id << " model " << p.model_id << " at " << p.ts.ns << " value " << p.value
                      << " confidence " << p.confidence << " (position " << event->position << ")\n";
        } else {
            std::cout << "no prediction within 10 s\n";
        }
        hub.cancel(predictions.id);

        std::cout << "shutdown: " << hub.shutdown() << " completed\n";
    } catch (const HubError& e) {
        std::cerr << "hub error " << static_cast<int>(e.code) << " (row " << e.row_index << "): " << e.what() << "\n";
        return 1;
    } catch (const std::exception& e) {
        std::cerr << "error: " << e.what() << "\n";
        return 1;
    }
    return 0;
}
