"""The app's shared UI code: what pages use but is not a page (Streamlit never offers these as pages).

- ``auth``: the gate (shared password or OpenID Connect) and who is logged in
- ``shell``: the page list, the login page, and the guard each page script starts with
- ``home_sections``, ``data_sections``, ``inspect_sections``, ``results_sections``, ``predict_sections``: each
  page's sections, functions with explicit arguments that the page script lays out
- ``widgets``: sidebar status, the live job panel, guard-clause helpers
- ``charts``: plotly figures drawn from saved run data
- ``models``: loaded models cached across users
- ``streamlit_internals``: every use of Streamlit's private API, in one place
"""
