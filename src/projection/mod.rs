//! Projection reducers: pure folds of runtime events into documents.
