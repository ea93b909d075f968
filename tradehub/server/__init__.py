"""The server: sessions on connections, their lanes, and the routes from requests to controllers."""
