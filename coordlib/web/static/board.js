// The board: swapped in again each time the server publishes a snapshot.
"use strict";
document.addEventListener("DOMContentLoaded", () => {
  const board = document.getElementById("board");
  let shown = Number(board.dataset.version || 0);
  const refresh = () => coord.swap("board", "/fragment/board");
  coord.refresh = refresh;
  coord.onBoard((version) => {
    if (version > shown) {
      shown = version;
      board.dataset.version = String(version);
      refresh();
    }
  });
});
