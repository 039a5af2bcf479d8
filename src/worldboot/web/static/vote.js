// Progressive enhancement of the vote form: one output cannot be both best and worst.
// The server checks this too; without JavaScript the form still works.
document.addEventListener("change", (event) => {
  const input = event.target;
  if (!(input instanceof HTMLInputElement) || input.type !== "radio") return;
  const other = input.name === "best" ? "worst" : input.name === "worst" ? "best" : null;
  if (!other) return;
  const twin = input.form.querySelector(`input[name="${other}"][value="${input.value}"]`);
  if (twin && twin.checked) twin.checked = false;
});
