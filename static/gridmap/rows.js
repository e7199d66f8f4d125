/* gridmap rows: a list of cards, each with a button (the worker's tasks and entities on the
 * phone page, ui/worker.rows). One Streamlit components-v2 element for the whole list: as
 * Streamlit elements each card was three (a bordered container, its text, its button), and on
 * a phone's slow CPU every element costs (React, styles, markdown); a list of 20 tasks and 15
 * entities was over 100 elements. Every text from the data is set as text (textContent), never
 * as HTML; a tap on a card's button sends its id (the trigger "open") and Python opens it.
 *
 * data: {rows: [{id, chip: [text, colour, dark?] | null, title, tag, lines: [text…], button}]}
 */

export default function (component) {
  const { parentElement, data, setTriggerValue } = component;
  let box = parentElement.querySelector(".gm-rows");
  if (!box) {
    box = document.createElement("div");
    box.className = "gm-rows";
    parentElement.appendChild(box);
  }
  const sig = JSON.stringify((data && data.rows) || []);
  if (box.dataset.sig === sig) return;
  box.dataset.sig = sig;
  const cards = [];
  for (const row of (data && data.rows) || []) {
    const card = document.createElement("div");
    card.className = "gm-row gm-task";
    const head = document.createElement("div");
    if (row.chip) {
      const chip = document.createElement("span");
      chip.className = "gm-chip" + (row.chip[2] ? " amber" : "");
      chip.style.background = row.chip[1];
      chip.textContent = row.chip[0];
      head.append(chip, " ");
    }
    const title = document.createElement("b");
    title.textContent = row.title;
    head.append(title);
    if (row.tag) head.append("\u3000" + row.tag);
    card.append(head);
    for (const line of row.lines || []) {
      const div = document.createElement("div");
      div.textContent = line;
      card.append(div);
    }
    const button = document.createElement("button");
    button.type = "button";
    button.textContent = row.button;
    button.addEventListener("click", () => setTriggerValue("open", row.id));
    card.append(button);
    cards.push(card);
  }
  box.replaceChildren(...cards);
}
