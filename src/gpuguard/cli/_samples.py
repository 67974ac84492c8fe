"""The demo's sample data: a shop's SQLite database (a dozen related tables) and documents."""

from __future__ import annotations

import sqlite3
from pathlib import Path

__all__ = ["write_sample_database", "write_sample_documents"]

_SCHEMA = """
CREATE TABLE categories (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE,
    parent_id INTEGER REFERENCES categories(id));
CREATE TABLE suppliers (id INTEGER PRIMARY KEY, name TEXT NOT NULL, country TEXT,
    contact_email TEXT);
CREATE TABLE products (id INTEGER PRIMARY KEY, sku TEXT NOT NULL UNIQUE, name TEXT NOT NULL,
    category_id INTEGER NOT NULL REFERENCES categories(id),
    supplier_id INTEGER REFERENCES suppliers(id), unit_price_cents INTEGER NOT NULL,
    discontinued INTEGER NOT NULL DEFAULT 0);
CREATE TABLE warehouses (id INTEGER PRIMARY KEY, code TEXT NOT NULL UNIQUE, city TEXT NOT NULL);
CREATE TABLE inventory (warehouse_id INTEGER NOT NULL REFERENCES warehouses(id),
    product_id INTEGER NOT NULL REFERENCES products(id), quantity INTEGER NOT NULL,
    PRIMARY KEY (warehouse_id, product_id));
CREATE TABLE customers (id INTEGER PRIMARY KEY, email TEXT NOT NULL UNIQUE,
    full_name TEXT NOT NULL, created_at TEXT NOT NULL, loyalty_tier TEXT);
CREATE TABLE addresses (id INTEGER PRIMARY KEY,
    customer_id INTEGER NOT NULL REFERENCES customers(id), line1 TEXT NOT NULL, city TEXT,
    postcode TEXT, country TEXT NOT NULL, is_default INTEGER NOT NULL DEFAULT 0);
CREATE TABLE employees (id INTEGER PRIMARY KEY, full_name TEXT NOT NULL, role TEXT NOT NULL,
    manager_id INTEGER REFERENCES employees(id));
CREATE TABLE orders (id INTEGER PRIMARY KEY,
    customer_id INTEGER NOT NULL REFERENCES customers(id),
    shipping_address_id INTEGER REFERENCES addresses(id), placed_at TEXT NOT NULL,
    status TEXT NOT NULL, handled_by INTEGER REFERENCES employees(id));
CREATE TABLE order_items (order_id INTEGER NOT NULL REFERENCES orders(id),
    product_id INTEGER NOT NULL REFERENCES products(id), quantity INTEGER NOT NULL,
    unit_price_cents INTEGER NOT NULL, PRIMARY KEY (order_id, product_id));
CREATE TABLE payments (id INTEGER PRIMARY KEY, order_id INTEGER NOT NULL REFERENCES orders(id),
    method TEXT NOT NULL, amount_cents INTEGER NOT NULL, paid_at TEXT);
CREATE TABLE shipments (id INTEGER PRIMARY KEY, order_id INTEGER NOT NULL REFERENCES orders(id),
    warehouse_id INTEGER NOT NULL REFERENCES warehouses(id), carrier TEXT,
    tracking_number TEXT, shipped_at TEXT, delivered_at TEXT);
CREATE TABLE reviews (id INTEGER PRIMARY KEY, product_id INTEGER NOT NULL REFERENCES products(id),
    customer_id INTEGER NOT NULL REFERENCES customers(id),
    rating INTEGER NOT NULL CHECK (rating BETWEEN 1 AND 5), body TEXT, created_at TEXT NOT NULL);
CREATE VIEW order_totals AS SELECT order_id, SUM(quantity * unit_price_cents) AS total_cents
    FROM order_items GROUP BY order_id;
"""

_DOCUMENTS = {
    "returns-policy.md": (
        "# Returns policy\n\nCustomers may return any product within 30 days of delivery. "
        "Refunds go back to the original payment method within five working days of the "
        "return reaching a warehouse. Discontinued products are refunded but not restocked."
    ),
    "shipping.md": (
        "# Shipping\n\nOrders ship from the warehouse that holds every item in stock; when "
        "none does, the order is split into several shipments. Each shipment has a carrier "
        "and a tracking number. Express delivery is available to loyalty tier gold."
    ),
    "loyalty-programme.txt": (
        "Loyalty programme. Customers move from bronze to silver after five orders and to "
        "gold after twenty. Gold customers get free express shipping and early access to "
        "new products. Tiers are reviewed every night by a batch job."
    ),
    "data-dictionary.md": (
        "# Data dictionary\n\nPrices are stored in cents as integers. Order status is one "
        "of placed, paid, shipped, delivered, cancelled. Reviews carry a rating from one to "
        "five. The order_totals view sums the items of each order."
    ),
}


def write_sample_database(path: Path) -> str:
    """Create (or re-create) the sample database at ``path``; its SQLAlchemy URL."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    with sqlite3.connect(path) as connection:
        connection.executescript(_SCHEMA)
    return f"sqlite:///{path.resolve()}"


def write_sample_documents(folder: Path) -> Path:
    """Write the sample documents into ``folder``; the folder."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in _DOCUMENTS.items():
        (folder / name).write_text(text + "\n", encoding="utf-8")
    return folder
