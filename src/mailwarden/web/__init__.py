"""The tracking center: pages for support staff and customers, the JSON API, the public /why/REF page."""
