//! The one integration test binary: real `tmidb-supervisor` processes in temp homes on
//! free ports (see `helpers`).

mod helpers;

mod api;
mod browser;
mod cli;
mod console;
mod contract;
mod ingest;
mod layers;
mod logs;
mod scale;
mod stack;
mod store;
mod supervisor;
