//! Convex side: HTTP client (wire format, errors, retries) and batch building.
